"""Simulation scenarios from TOML files, and from command-line style parameters.

A scenario file::

    [scenario]
    duration_s = 120          # simulated seconds
    seed = 7
    topology = "random"       # chain | grid | random | explicit (nodes/links below)
    nodes = 30                # for chain/grid/random
    loss = 0.1                # default per-link loss probability
    delay_ms = 2.0            # default per-link one-way delay
    range = 0.2               # radio range for random/explicit positions (area: 100/unit^2)
    register_delay_s = [2.0, 4.0]

    [[node]]                  # explicit topology: positions, linked within `range`
    name = "medic-1"
    x = 0.1
    y = 0.2
    start_s = 0.0             # > 0: the node joins at that time
    role = "handset"          # or "relay"

    [[link]]                  # explicit links (added to position-based ones)
    a = "medic-1"
    b = "engine-7"
    loss = 0.2
    delay_ms = 5

    [[event]]
    at_s = 30
    action = "kill"           # join | leave | kill | restart | partition | heal
    nodes = ["medic-1"]
    # groups = [["a", "b"], ["c"]]   for partition

    [[traffic]]               # one MESSAGE or call between two nodes' SIP clients
    kind = "message"          # message | call
    from = "medic-1"
    to = "engine-7"
    at_s = 20
    # duration_s = 10         for a call: the caller hangs up after this

    [[traffic]]               # a rate: evenly spaced, random pairs unless from/to given
    kind = "message"
    rate_per_s = 0.5
    start_s = 15              # default: the traffic window (after registration)
    end_s = 90                # default: long enough before the end for it to complete

Islands and uplinks (issue 10)::

    [scenario]
    topology = "islands"      # separate radio components: a0..a<n-1>, b0.., c0..
    islands = 3
    nodes = 50                # per island
    cross_site = 1.0          # fraction of random pairs taken across islands

    [[uplink]]                # a WAN between uplinked relays (they become relays)
    nodes = ["a0", "b0", "c0"]   # default with topology "islands": each island's hub
    delay_ms = 100            # one way, per WAN datagram
    loss = 0.02
    down = [[200, 230]]       # each member's access link is down in these [start, end)
    flap_period_s = 120       # and in the last flap_down_s of every period...
    flap_down_s = 60
    flap_offset_s = 0         # ...from this time, shifted by flap_stagger_s per member
    flap_stagger_s = 20
    stable_s = 2              # the bridges' uplink hysteresis (up after stable_s of
    grace_s = 5               # good DHT peers, down after grace_s without)
    record_ttl_s = 600        # life of the bridges' DHT records (the runtime's default)

Traffic (``[[traffic]]``, or ``messages``/``calls`` in ``[scenario]`` for that many
random ones) makes every node whole: SIP gateway, store-and-forward, media relay and one
simulated SIP client; ``gateways = true`` asks for whole nodes without traffic.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from meshcomm.errors import ConfigError
from meshcomm.node.storeforward import RELAY_ROLE
from meshcomm.sim.engine import Action, ActionKind, SimConfig
from meshcomm.sim.topology import (
    DEFAULT_RANGE,
    MAX_ISLANDS,
    LinkSpec,
    Topology,
    chain,
    grid,
    hub,
    islands,
    random_geometric,
)
from meshcomm.sim.traffic import (
    DEFAULT_CALL_S,
    MAX_TRAFFIC_EVENTS,
    TrafficEvent,
    TrafficKind,
    TrafficPlan,
    TrafficRate,
)
from meshcomm.sim.uplinks import SIM_RECORD_TTL_S, UplinkSpec

TOPOLOGIES = ("chain", "grid", "random", "islands", "explicit")
MAX_SIM_NODES = 5000
_SCENARIO_KEYS = {"duration_s", "seed", "topology", "nodes", "loss", "delay_ms", "range",
                  "register_delay_s", "messages", "calls", "call_duration_s", "gateways",
                  "islands", "cross_site"}
_UPLINK_KEYS = {"nodes", "delay_ms", "loss", "down", "flap_period_s", "flap_down_s",
                "flap_offset_s", "flap_stagger_s", "stable_s", "grace_s", "record_ttl_s"}
#: Shortest and longest life of the bridges' DHT records (s).
MIN_RECORD_TTL_S = 10
MAX_RECORD_TTL_S = 86400
#: Longest WAN delay (ms), longest uplink hysteresis (s), down windows per entry.
MAX_UPLINK_DELAY_MS = 60_000.0
MAX_UPLINK_HYSTERESIS_S = 3600.0
MAX_DOWN_WINDOWS = 10_000
_NODE_KEYS = {"name", "x", "y", "start_s", "role"}
_LINK_KEYS = {"a", "b", "loss", "delay_ms"}
_E = TypeVar("_E", bound=Enum)
_EVENT_KEYS = {"at_s", "action", "nodes", "groups"}
_TRAFFIC_KEYS = {"kind", "from", "to", "at_s", "duration_s", "rate_per_s", "start_s", "end_s"}
#: Highest traffic rate of one entry (events per simulated second).
MAX_RATE_PER_S = 1000.0
#: Longest call (simulated seconds).
MAX_CALL_S = 86400.0


@dataclass(slots=True)
class ScenarioParams:
    topology: str = "random"
    nodes: int = 30
    loss: float = 0.0
    delay_ms: float = 2.0
    radio_range: float = DEFAULT_RANGE
    duration_s: float = 60.0
    seed: int = 1
    register_delay_s: tuple[float, float] = (2.0, 4.0)
    roles: dict[str, str] = field(default_factory=dict)
    #: random MESSAGEs and calls between the nodes' clients (``--messages``, ``--calls``)
    messages: int = 0
    calls: int = 0
    call_duration_s: float = DEFAULT_CALL_S
    #: whole nodes (gateways, store-and-forward, media relay, clients) without traffic
    gateways: bool = False
    #: topology "islands": how many (``nodes`` is then per island)
    islands: int = 3
    #: fraction of random traffic pairs across islands
    cross_site: float = 0.0


def _check_keys(table: Mapping[str, Any], allowed: set[str], path: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}", "unknown key")


def _num(table: Mapping[str, Any], key: str, path: str, default: float, lo: float,
         hi: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}.{key}", "must be a number")
    if not lo <= value <= hi:
        raise ConfigError(f"{path}.{key}", f"must be in [{lo}, {hi}]")
    return float(value)


def build_topology(params: ScenarioParams) -> Topology:
    spec = LinkSpec(params.loss, params.delay_ms / 1000.0)
    if params.topology == "islands":
        if not 1 <= params.islands <= MAX_ISLANDS:
            raise ConfigError("islands", f"must be in 1..{MAX_ISLANDS}")
        if not 1 <= params.nodes * params.islands <= MAX_SIM_NODES:
            raise ConfigError("nodes", f"islands * nodes must be in 1..{MAX_SIM_NODES}")
        return islands(params.islands, params.nodes, spec,
                       random.Random(f"topology:{params.seed}"), params.radio_range)
    if not 1 <= params.nodes <= MAX_SIM_NODES:
        raise ConfigError("nodes", f"must be in 1..{MAX_SIM_NODES}")
    if params.topology == "chain":
        return chain(params.nodes, spec)
    if params.topology == "grid":
        return grid(params.nodes, spec)
    if params.topology == "random":
        rng = random.Random(f"topology:{params.seed}")
        return random_geometric(params.nodes, spec, rng, params.radio_range)
    raise ConfigError("topology", f"must be one of {', '.join(TOPOLOGIES[:4])}")


def sim_config(params: ScenarioParams, topology: Topology | None = None,
               actions: list[Action] | None = None,
               absent: frozenset[str] = frozenset(), baseline: str | None = None,
               traffic: tuple[list[TrafficEvent], list[TrafficRate]] = ([], []),
               uplinks: tuple[UplinkSpec, ...] = ()) -> SimConfig:
    if params.messages < 0 or params.calls < 0:
        raise ConfigError("messages" if params.messages < 0 else "calls", "must be >= 0")
    if params.messages + params.calls > MAX_TRAFFIC_EVENTS:
        raise ConfigError("messages", f"at most {MAX_TRAFFIC_EVENTS} messages and calls")
    if not 0.0 <= params.cross_site <= 1.0:
        raise ConfigError("cross_site", "must be in [0, 1]")
    plan = TrafficPlan(events=tuple(traffic[0]), rates=tuple(traffic[1]),
                       random_messages=params.messages, random_calls=params.calls,
                       call_duration_s=params.call_duration_s, cross_site=params.cross_site)
    roles = dict(params.roles)
    for spec in uplinks:
        if baseline is not None:
            raise ConfigError("uplink", "the flooding baseline runs no uplinks")
        roles.update(dict.fromkeys(spec.nodes, RELAY_ROLE))   # an uplink makes a relay
    return SimConfig(topology=topology or build_topology(params), duration_s=params.duration_s,
                     seed=params.seed, baseline=baseline, actions=actions or [],
                     absent_at_start=absent, register_delay_s=params.register_delay_s,
                     roles=roles, traffic=plan, gateways=params.gateways, uplinks=uplinks)


def load_scenario(path: Path, baseline: str | None = None) -> SimConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"TOML syntax error: {exc}") from exc
    return parse_scenario(data, baseline)


def parse_scenario(data: Mapping[str, Any], baseline: str | None = None) -> SimConfig:
    _check_keys(data, {"scenario", "node", "link", "event", "traffic", "uplink"}, "")
    head = data.get("scenario", {})
    _check_keys(head, _SCENARIO_KEYS, "scenario")
    params = ScenarioParams(
        topology=str(head.get("topology", "explicit" if "node" in data else "random")),
        nodes=int(_num(head, "nodes", "scenario", 30, 1, MAX_SIM_NODES)),
        loss=_num(head, "loss", "scenario", 0.0, 0.0, 1.0),
        delay_ms=_num(head, "delay_ms", "scenario", 2.0, 0.0, 10_000.0),
        radio_range=_num(head, "range", "scenario", DEFAULT_RANGE, 0.0, 1e6),
        duration_s=_num(head, "duration_s", "scenario", 60.0, 0.0, 1e7),
        seed=int(_num(head, "seed", "scenario", 1, 0, 2**63)),
        messages=int(_num(head, "messages", "scenario", 0, 0, MAX_TRAFFIC_EVENTS)),
        calls=int(_num(head, "calls", "scenario", 0, 0, MAX_TRAFFIC_EVENTS)),
        call_duration_s=_num(head, "call_duration_s", "scenario", DEFAULT_CALL_S, 0.1,
                             MAX_CALL_S),
        islands=int(_num(head, "islands", "scenario", 3, 1, MAX_ISLANDS)),
        cross_site=_num(head, "cross_site", "scenario", 0.0, 0.0, 1.0),
    )
    if "islands" in head and head.get("topology") != "islands":
        raise ConfigError("scenario.islands", 'only with topology = "islands"')
    gateways = head.get("gateways", False)
    if not isinstance(gateways, bool):
        raise ConfigError("scenario.gateways", "must be true or false")
    params.gateways = gateways
    delay = head.get("register_delay_s", [2.0, 4.0])
    if (not isinstance(delay, list) or len(delay) != 2
            or not all(isinstance(v, (int, float)) for v in delay) or delay[0] > delay[1]):
        raise ConfigError("scenario.register_delay_s", "must be [low, high] seconds")
    params.register_delay_s = (float(delay[0]), float(delay[1]))
    if params.topology not in TOPOLOGIES:
        raise ConfigError("scenario.topology", f"must be one of {', '.join(TOPOLOGIES)}")
    absent: set[str] = set()
    actions: list[Action] = []
    if params.topology == "explicit":
        topo = _explicit_nodes(data.get("node", []), params, absent, actions)
    else:
        topo = build_topology(params)
    _explicit_links(data.get("link", []), topo, params)
    actions.extend(_events(data.get("event", []), set(topo.names)))
    traffic = _traffic(data.get("traffic", []), set(topo.names), params)
    uplinks = _uplinks(data.get("uplink", []), topo, params)
    return sim_config(params, topo, actions, frozenset(absent), baseline, traffic, uplinks)


def _explicit_nodes(nodes: Any, params: ScenarioParams, absent: set[str],
                    actions: list[Action]) -> Topology:
    if not isinstance(nodes, list) or not nodes:
        raise ConfigError("node", "an explicit topology needs [[node]] entries")
    topo = Topology([])
    for i, node in enumerate(nodes):
        path = f"node[{i}]"
        if not isinstance(node, dict):
            raise ConfigError(path, "must be a table")
        _check_keys(node, _NODE_KEYS, path)
        name = node.get("name")
        if not isinstance(name, str) or not name or name in topo.names:
            raise ConfigError(f"{path}.name", "must be a unique non-empty string")
        topo.names.append(name)
        if "x" in node or "y" in node:
            topo.positions[name] = (_num(node, "x", path, 0, -1e6, 1e6),
                                    _num(node, "y", path, 0, -1e6, 1e6))
        start = _num(node, "start_s", path, 0.0, 0.0, 1e7)
        if start > 0:
            absent.add(name)
            actions.append(Action(start, ActionKind.JOIN, (name,)))
        role = node.get("role", "handset")
        if role not in ("handset", "relay"):
            raise ConfigError(f"{path}.role", "must be handset or relay")
        params.roles[name] = role
    spec = LinkSpec(params.loss, params.delay_ms / 1000.0)
    placed = list(topo.positions.items())
    for i, (a, (ax, ay)) in enumerate(placed):
        for b, (bx, by) in placed[i + 1:]:
            if (ax - bx) ** 2 + (ay - by) ** 2 <= params.radio_range ** 2:
                topo.add_link(a, b, spec)
    return topo


def _explicit_links(links: Any, topo: Topology, params: ScenarioParams) -> None:
    if not isinstance(links, list):
        raise ConfigError("link", "must be an array of tables")
    for i, link in enumerate(links):
        path = f"link[{i}]"
        if not isinstance(link, dict):
            raise ConfigError(path, "must be a table")
        _check_keys(link, _LINK_KEYS, path)
        a, b = link.get("a"), link.get("b")
        for key, name in (("a", a), ("b", b)):
            if name not in topo.names:
                raise ConfigError(f"{path}.{key}", f"unknown node {name!r}")
        spec = LinkSpec(_num(link, "loss", path, params.loss, 0.0, 1.0),
                        _num(link, "delay_ms", path, params.delay_ms, 0.0, 10_000.0) / 1000.0)
        topo.add_link(str(a), str(b), spec)


def _tables(entries: Any, name: str, keys: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, table) of each entry of an array of tables ``name``, keys checked."""
    if not isinstance(entries, list):
        raise ConfigError(name, "must be an array of tables")
    for i, entry in enumerate(entries):
        path = f"{name}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(path, "must be a table")
        _check_keys(entry, keys, path)
        yield path, entry


def _choice(table: Mapping[str, Any], key: str, path: str, kinds: type[_E]) -> _E:
    """The Enum member named by ``table[key]``; ConfigError listing the choices."""
    try:
        return kinds(table.get(key))
    except ValueError as exc:
        choices = ", ".join(str(k.value) for k in kinds)
        raise ConfigError(f"{path}.{key}", f"must be one of {choices}") from exc


def _events(events: Any, names: set[str]) -> list[Action]:
    out: list[Action] = []
    for path, event in _tables(events, "event", _EVENT_KEYS):
        kind = _choice(event, "action", path, ActionKind)
        nodes = tuple(event.get("nodes", ()))
        groups = tuple(tuple(g) for g in event.get("groups", ()))
        for name in nodes + tuple(n for g in groups for n in g):
            if name not in names:
                raise ConfigError(f"{path}", f"unknown node {name!r}")
        if kind is ActionKind.PARTITION and len(groups) < 2:
            raise ConfigError(f"{path}.groups", "a partition needs at least two groups")
        if kind not in (ActionKind.PARTITION, ActionKind.HEAL) and not nodes:
            raise ConfigError(f"{path}.nodes", f"{kind.value} needs nodes")
        out.append(Action(_num(event, "at_s", path, 0.0, 0.0, 1e7), kind, nodes, groups))
    return out


def _traffic(entries: Any, names: set[str],
             params: ScenarioParams) -> tuple[list[TrafficEvent], list[TrafficRate]]:
    events: list[TrafficEvent] = []
    rates: list[TrafficRate] = []
    for path, entry in _tables(entries, "traffic", _TRAFFIC_KEYS):
        kind = _choice(entry, "kind", path, TrafficKind)
        src, dst = _traffic_node(entry, "from", path, names), _traffic_node(entry, "to",
                                                                            path, names)
        if src is not None and src == dst:
            raise ConfigError(f"{path}.to", "must differ from 'from'")
        if "duration_s" in entry and kind is not TrafficKind.CALL:
            raise ConfigError(f"{path}.duration_s", "only a call has a duration")
        duration = _num(entry, "duration_s", path, params.call_duration_s, 0.1, MAX_CALL_S)
        if ("at_s" in entry) == ("rate_per_s" in entry):
            raise ConfigError(path, "needs either at_s (one event) or rate_per_s (a rate)")
        if "at_s" in entry:
            for key in ("start_s", "end_s"):
                if key in entry:
                    raise ConfigError(f"{path}.{key}", "only a rate has a start and an end")
            if src is None or dst is None:
                raise ConfigError(f"{path}.{'from' if src is None else 'to'}",
                                  "a single event needs from and to")
            at = _num(entry, "at_s", path, 0.0, 0.0, params.duration_s)
            events.append(TrafficEvent(at, kind, src, dst, duration))
            continue
        rates.append(_rate(entry, path, kind, src, dst, duration, params))
    return events, rates


def _traffic_node(entry: Mapping[str, Any], key: str, path: str, names: set[str]) -> str | None:
    name = entry.get(key)
    if name is None:
        return None
    if not isinstance(name, str) or name not in names:
        raise ConfigError(f"{path}.{key}", f"unknown node {name!r}")
    return name


def _rate(entry: Mapping[str, Any], path: str, kind: TrafficKind, src: str | None,
          dst: str | None, duration: float, params: ScenarioParams) -> TrafficRate:
    rate = _num(entry, "rate_per_s", path, 0.0, 0.0, MAX_RATE_PER_S)
    if rate <= 0:
        raise ConfigError(f"{path}.rate_per_s", "must be > 0")
    start = end = None
    if "start_s" in entry:
        start = _num(entry, "start_s", path, 0.0, 0.0, params.duration_s)
    if "end_s" in entry:
        end = _num(entry, "end_s", path, 0.0, 0.0, params.duration_s)
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"{path}.end_s", "must be after start_s")
    return TrafficRate(kind, rate, start, end, src, dst, duration)


def default_uplink_nodes(topo: Topology) -> tuple[str, ...]:
    """The hub of every island (radio component): the default uplinked relays."""
    members: dict[int, list[str]] = {}
    for name, island in topo.components().items():
        members.setdefault(island, []).append(name)
    return tuple(hub(topo, names) for _, names in sorted(members.items()))


def _uplinks(entries: Any, topo: Topology, params: ScenarioParams) -> tuple[UplinkSpec, ...]:
    out: list[UplinkSpec] = []
    taken: set[str] = set()
    for path, entry in _tables(entries, "uplink", _UPLINK_KEYS):
        if "nodes" in entry:
            nodes = entry["nodes"]
            if (not isinstance(nodes, list) or len(nodes) < 2
                    or not all(isinstance(n, str) for n in nodes)):
                raise ConfigError(f"{path}.nodes", "must be a list of at least two node names")
        elif params.topology == "islands":
            nodes = list(default_uplink_nodes(topo))
        else:
            raise ConfigError(f"{path}.nodes", 'needed unless topology = "islands"')
        for name in nodes:
            if name not in topo.names:
                raise ConfigError(f"{path}.nodes", f"unknown node {name!r}")
            if name in taken:
                raise ConfigError(f"{path}.nodes", f"{name!r} is on two uplinks (or twice)")
            taken.add(name)
        out.append(_uplink(entry, path, tuple(nodes), params))
    return tuple(out)


def _uplink(entry: Mapping[str, Any], path: str, nodes: tuple[str, ...],
            params: ScenarioParams) -> UplinkSpec:
    period = _num(entry, "flap_period_s", path, 0.0, 0.0, 1e7)
    flap_down = _num(entry, "flap_down_s", path, 0.0, 0.0, 1e7)
    if (period > 0) != (flap_down > 0):
        raise ConfigError(f"{path}.flap_down_s", "flapping needs both flap_period_s and "
                                                 "flap_down_s > 0")
    if period and flap_down >= period:
        raise ConfigError(f"{path}.flap_down_s", "must be less than flap_period_s")
    return UplinkSpec(
        nodes, delay_s=_num(entry, "delay_ms", path, 50.0, 0.0, MAX_UPLINK_DELAY_MS) / 1000.0,
        loss=_num(entry, "loss", path, 0.0, 0.0, 0.99), down=_windows(entry, path, params),
        flap_period_s=period, flap_down_s=flap_down,
        flap_offset_s=_num(entry, "flap_offset_s", path, 0.0, 0.0, 1e7),
        flap_stagger_s=_num(entry, "flap_stagger_s", path, 0.0, 0.0, 1e7),
        stable_s=_num(entry, "stable_s", path, 2.0, 0.001, MAX_UPLINK_HYSTERESIS_S),
        grace_s=_num(entry, "grace_s", path, 5.0, 0.001, MAX_UPLINK_HYSTERESIS_S),
        record_ttl_s=int(_num(entry, "record_ttl_s", path, SIM_RECORD_TTL_S, MIN_RECORD_TTL_S,
                              MAX_RECORD_TTL_S)))


def _windows(entry: Mapping[str, Any], path: str,
             params: ScenarioParams) -> tuple[tuple[float, float], ...]:
    down = entry.get("down", [])
    if not isinstance(down, list) or len(down) > MAX_DOWN_WINDOWS:
        raise ConfigError(f"{path}.down", f"must be a list of at most {MAX_DOWN_WINDOWS} "
                                          "[start, end] pairs")
    out = []
    for i, window in enumerate(down):
        if (not isinstance(window, list) or len(window) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in window)
                or not 0 <= window[0] < window[1] <= 1e7):
            raise ConfigError(f"{path}.down[{i}]", "must be [start, end] seconds, "
                                                   "0 <= start < end")
        out.append((float(window[0]), float(window[1])))
    return tuple(out)
