"""Uplinks in the simulator (issue 10): islands bridged by a WAN, a DHT model, uplink meshes.

A scenario's ``[[uplink]]`` entries (:class:`UplinkSpec`) name the uplinked relays of the
islands; the relays of one entry form a WAN on which each reaches each, with the entry's
delay and loss, while both ends' access links are up (``down`` windows and a flapping
schedule say when a relay's link is down). :class:`Wan` is that WAN in one run:

* every uplinked relay is a whole node with a :class:`~meshcomm.dht.bridge.DhtBridge` and an
  uplink mesh (a second :class:`~meshcomm.node.mesh.MeshNode`, same identity, role relay,
  capability ``uplink``, announcing ``sip:<16 hex of its id>@uplink.invalid`` so the uplink
  mesh learns routes to it), built by the incident like the runtime's ``meshcomm relay
  --uplink``; its island node carries the ``uplink`` capability too;
* the bridges' DHT operations (``Edge.dht``) go into one shared in-memory
  :class:`~meshcomm.dht.model.DhtModel` per run; its results come back through each node's
  pump. A relay whose link is down is partitioned alone in the model, so its ``DhtPeers``
  samples drop to none and its uplink state machine follows the link (with its hysteresis);
* the uplink mesh's datagrams (``dst`` "uplink|..." from ``NodeCore.to_send``) travel on the
  WAN: "uplink|" alone to every member, "uplink|<name>" to one; they arrive from
  ``LinkAddr("uplink|<sender>")``. Radio broadcasts (``dst`` None) never reach the WAN.

What a run reports (:meth:`Wan.report`, ``uplinks`` in the JSON): cross-site MESSAGE
delivery (sent, delivered exactly once, duplicates, latency), resolution latency (a
gateway's ``ResolveAor`` to its ``ResolveDone``, measured by :class:`MeasuredTunnel`), the
uplink transitions the bridges journaled, the WAN's datagrams and the summed counters of the
tunnels and bridges (where cross-site traffic stopped).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from meshcomm.dht.api import UPLINK_CAP, BridgeConfig
from meshcomm.dht.bridge import DhtBridge
from meshcomm.dht.model import DhtModel, ModelConfig
from meshcomm.dht.port import DhtOp
from meshcomm.dht.records import secret_for
from meshcomm.dht.uplink import UplinkConfig
from meshcomm.errors import ConfigError
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import UplinkChanged
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.storeforward import RELAY_ROLE
from meshcomm.node.tunnel import ResolveDone, Tunnel, TunnelEvent
from meshcomm.overlay.core import FrameDecoder
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sim.clients import MessageRecord
from meshcomm.sim.metrics import percentile
from meshcomm.types import UPLINK_PREFIX, Datagram, LinkAddr

if TYPE_CHECKING:
    from meshcomm.node.core import TunnelFactory
    from meshcomm.sim.engine import Simulator

#: Domain of the uplink mesh's AoRs (as the runtime's uplink transport: never in DNS).
UPLINK_AOR_DOMAIN = "uplink.invalid"
UPLINK_AOR_ID_HEX = 16
#: The bridges' DHT records live as long as the runtime's unless a scenario says otherwise
#: (``record_ttl_s``); the bridges rescan their island's table every SIM_RESYNC_S.
SIM_RECORD_TTL_S = BridgeConfig().record_ttl_s
SIM_RESYNC_S = 30.0
#: DHT port of the simulated uplink addresses named in the attachments.
SIM_UPLINK_PORT = 4223
#: Resolutions measured at once (older unanswered ones are forgotten beyond this).
MAX_OPEN_RESOLVES = 65536


def uplink_aor(node_id: bytes) -> str:
    """The AoR an uplink-mesh member announces there (the runtime's rule)."""
    return f"sip:{node_id.hex()[:UPLINK_AOR_ID_HEX]}@{UPLINK_AOR_DOMAIN}"


@dataclass(frozen=True, slots=True)
class UplinkSpec:
    """One ``[[uplink]]`` entry: a WAN between ``nodes`` (see the module docstring).

    A member's access link is down in each of ``down`` ([start, end) seconds), and, with
    ``flap_period_s`` > 0, for the last ``flap_down_s`` of every period (the first period
    starts at ``flap_offset_s`` plus ``flap_stagger_s`` times the member's index in
    ``nodes``). ``stable_s``/``grace_s`` are the bridges' uplink hysteresis,
    ``record_ttl_s`` the life of their DHT records (refreshed at about 60% of it)."""

    nodes: tuple[str, ...]
    delay_s: float = 0.05
    loss: float = 0.0
    down: tuple[tuple[float, float], ...] = ()
    flap_period_s: float = 0.0
    flap_down_s: float = 0.0
    flap_offset_s: float = 0.0
    flap_stagger_s: float = 0.0
    stable_s: float = 2.0
    grace_s: float = 5.0
    record_ttl_s: int = SIM_RECORD_TTL_S

    def windows(self, index: int, until: float) -> list[tuple[float, float]]:
        """The down windows of member ``index`` that start before ``until``, merged."""
        spans = [w for w in self.down if w[0] < until]
        if self.flap_period_s > 0 and self.flap_down_s > 0:
            start = self.flap_offset_s + index * self.flap_stagger_s
            up_s = self.flap_period_s - self.flap_down_s
            while start + up_s < until:
                spans.append((start + up_s, start + self.flap_period_s))
                start += self.flap_period_s
        merged: list[tuple[float, float]] = []
        for lo, hi in sorted(spans):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        return merged


class WanCounter(StrEnum):
    SENT = "wan_datagrams_sent"             # uplink datagrams handed to the WAN
    DELIVERED = "wan_datagrams_delivered"   # copies scheduled to a member
    LOST = "wan_datagrams_lost"             # copies the WAN's loss took
    LINK_DOWN = "wan_datagrams_link_down"   # copies not sent: an end's link was down
    NOT_MEMBER = "wan_datagrams_not_member"  # from a node on no WAN, or to a non-member
    DHT_OPS = "wan_dht_ops"                 # bridge operations into the model
    DHT_RESULTS = "wan_dht_results"         # model results handed to a pump
    DHT_RESULTS_DROPPED = "wan_dht_results_to_stopped_node"
    UPLINK_PEERS_EVENTS = "wan_uplink_peers_events"  # tunnels' UplinkPeers (full mesh here)


@dataclass(slots=True)
class _Member:
    spec: UplinkSpec
    index: int
    wan: int
    address: str
    up: bool = True


class ResolveProbe:
    """Times every resolution: a tunnel's ``resolve`` to its ``ResolveDone``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._open: dict[tuple[str, int], float] = {}
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()

    def started(self, name: str, request_id: int) -> None:
        if len(self._open) >= MAX_OPEN_RESOLVES:
            del self._open[next(iter(self._open))]
        self._open[(name, request_id)] = self.clock()

    def done(self, name: str, event: ResolveDone) -> None:
        self.statuses[event.status.name.lower()] += 1
        started = self._open.pop((name, event.request_id), None)
        if started is not None and event.node is not None:
            self.latencies.append(self.clock() - started)

    def report(self) -> dict[str, object]:
        lat = self.latencies
        return {"asked": sum(self.statuses.values()) + len(self._open),
                "answered": dict(sorted(self.statuses.items())),
                "unanswered": len(self._open),
                "latency_s": {"p50": round(percentile(lat, 0.5), 4),
                              "p95": round(percentile(lat, 0.95), 4),
                              "max": round(max(lat, default=0.0), 4)}}


class MeasuredTunnel(Tunnel):
    """The node's :class:`Tunnel`, reporting its resolutions to a :class:`ResolveProbe`
    (the gateway's ``ResolveAor`` becomes ``resolve``; ``ResolveDone`` leaves through
    ``next_event``): same behaviour, observed."""

    def __init__(self, node: MeshNode, verifier: SignatureVerifier, *, name: str,
                 probe: ResolveProbe, dht: DhtBridge | None = None,
                 uplink: MeshNode | None = None) -> None:
        super().__init__(node, verifier, dht=dht, uplink=uplink)
        self.name = name
        self.probe = probe

    def resolve(self, request_id: int, aor: str, now: float) -> None:
        self.probe.started(self.name, request_id)
        super().resolve(request_id, aor, now)

    def next_event(self) -> TunnelEvent | None:
        event = super().next_event()
        if isinstance(event, ResolveDone):
            self.probe.done(self.name, event)
        return event


class Wan:
    """The WANs of a run and their DHT (see the module docstring)."""

    def __init__(self, sim: Simulator, specs: tuple[UplinkSpec, ...], seed: int) -> None:
        self.sim = sim
        self.specs = specs
        self.seed = seed
        self.members: dict[str, _Member] = {}
        for wan, spec in enumerate(specs):
            for index, name in enumerate(spec.nodes):
                if name in self.members:
                    raise ConfigError("uplink", f"{name!r} is on two uplinks (or twice)")
                self.members[name] = _Member(spec, index, wan,
                                             f"10.{wan % 256}.{index // 256}.{index % 256}"
                                             f":{SIM_UPLINK_PORT}")
        first = specs[0]            # the DHT model's latency and loss: the first WAN's
        self.model = DhtModel(random.Random(f"meshcomm-sim-dht:{seed}"), ModelConfig(
            latency_s=2 * first.delay_s, jitter_s=first.delay_s / 2,
            loss=min(first.loss, 0.99)))
        for name in self.members:
            self.model.add_node(name)
        self._armed: float | None = None
        self._rng = random.Random(f"meshcomm-sim-wan:{seed}")
        self.counters: Counter[str] = Counter()
        self.transitions: Counter[str] = Counter()
        self.probe = ResolveProbe(lambda: self.sim.now)
        self._partition()

    # ------------------------------------------------------------ membership
    def is_member(self, name: str) -> bool:
        return name in self.members

    def schedule(self, until: float) -> list[tuple[float, str, bool]]:
        """(time, node, link up) of every access-link change before ``until``."""
        out: list[tuple[float, str, bool]] = []
        for name, member in self.members.items():
            for lo, hi in member.spec.windows(member.index, until):
                out.append((lo, name, False))
                if hi < until:
                    out.append((hi, name, True))
        return sorted(out)

    def link(self, name: str, up: bool) -> None:
        """The access link of ``name`` goes up or down (a scheduled change)."""
        self.members[name].up = up
        self._partition()

    def _partition(self) -> None:
        """Members up on one WAN reach each other in the DHT; one that is down, nobody."""
        groups: dict[object, list[str]] = {}
        for name, member in self.members.items():
            groups.setdefault(member.wan if member.up else name, []).append(name)
        self.model.partition(groups.values())

    def node_started(self, name: str) -> None:
        if name in self.members:
            self.model.restart(name)

    def node_stopped(self, name: str) -> None:
        """A killed member's DHT node dies with it (what it stored is lost)."""
        if name in self.members and self.model.nodes[name].alive:
            self.model.kill(name)

    # ------------------------------------------------------------ node parts
    def island_settings(self, settings: NodeSettings) -> NodeSettings:
        """An uplinked relay's island node carries the ``uplink`` capability."""
        if UPLINK_CAP in settings.caps:
            return settings
        return NodeSettings(incident=settings.incident, role=settings.role,
                            registration_lifetime_s=settings.registration_lifetime_s,
                            trust=settings.trust, overlay=settings.overlay,
                            caps=(*settings.caps, UPLINK_CAP))

    def uplink_mesh(self, name: str, identity: Identity, settings: NodeSettings, boots: int,
                    verifier: SignatureVerifier, decoder: FrameDecoder) -> MeshNode:
        """The member's uplink mesh node (role relay, capability uplink)."""
        mesh_settings = NodeSettings(incident=settings.incident, role=RELAY_ROLE,
                                     registration_lifetime_s=settings.registration_lifetime_s,
                                     trust=settings.trust,
                                     overlay=settings.overlay.for_uplink(),
                                     caps=(UPLINK_CAP,))
        rng = random.Random(f"meshcomm-sim-uplink-mesh:{self.seed}:{name}:{boots}")
        return MeshNode(identity, mesh_settings, verifier=verifier, rng=rng, now=self.sim.now,
                        seq_base=boots << 32, frame_decoder=decoder)

    def bridge(self, name: str, identity: Identity, node: MeshNode, boots: int) -> DhtBridge:
        """The member's DHT bridge: the spec's record TTL and hysteresis, the incident's
        derived secret."""
        member = self.members[name]
        config = BridgeConfig(uplink_addrs=(member.address,),
                              record_ttl_s=member.spec.record_ttl_s,
                              resync_s=SIM_RESYNC_S,
                              uplink=UplinkConfig(min_peers=1, stable_s=member.spec.stable_s,
                                                  grace_s=member.spec.grace_s))
        rng = random.Random(f"meshcomm-sim-dht-bridge:{self.seed}:{name}:{boots}")
        return DhtBridge(identity, node.table, secret_for(node.settings.incident, None),
                         config, node.overlay.verifier, rng, now=self.sim.now,
                         seq_base=boots << 32)

    def tunnel_factory(self, name: str) -> TunnelFactory:
        """How ``compose`` builds the tunnel of node ``name``: timed by the run's probe."""
        probe = self.probe

        def make(node: MeshNode, dht: DhtBridge | None, uplink: MeshNode | None) -> Tunnel:
            return MeasuredTunnel(node, node.overlay.verifier, name=name, probe=probe,
                                  dht=dht, uplink=uplink)
        return make

    # ------------------------------------------------------------ the WAN
    def transmit(self, src: str, dgram: Datagram) -> None:
        """An uplink datagram of ``src``: to every member of its WAN, or to one."""
        self.counters[WanCounter.SENT] += 1
        member = self.members.get(src)
        if member is None:
            self.counters[WanCounter.NOT_MEMBER] += 1
            return
        target = (dgram.dst or UPLINK_PREFIX)[len(UPLINK_PREFIX):]
        if target:
            peer = self.members.get(target)
            if peer is None or peer.wan != member.wan or target == src:
                self.counters[WanCounter.NOT_MEMBER] += 1
                return
            names = [target]
        else:
            names = [n for n in member.spec.nodes if n != src]
        frame = (dgram.data, LinkAddr(UPLINK_PREFIX + src))
        spec, now = member.spec, self.sim.now
        for name in names:
            if not (member.up and self.members[name].up):
                self.counters[WanCounter.LINK_DOWN] += 1
                continue
            if spec.loss and self._rng.random() < spec.loss:
                self.counters[WanCounter.LOST] += 1
                continue
            self.counters[WanCounter.DELIVERED] += 1
            self.sim.deliver_at(now + spec.delay_s, name, frame)

    # ------------------------------------------------------------ the DHT model
    def submit(self, name: str, op: DhtOp) -> None:
        """A bridge's operation (from its node's edge) into the model."""
        self.counters[WanCounter.DHT_OPS] += 1
        self.model.submit(name, op, self.sim.now)
        self.arm()

    def arm(self) -> None:
        due = self.model.next_timer()
        if due is not None and (self._armed is None or due < self._armed
                                or self._armed < self.sim.now):
            self._armed = due
            self.sim.push_wan(due, None)

    def fire(self, payload: object) -> None:
        """A heap event of the WAN: a link change, or the model's timer."""
        if isinstance(payload, tuple):
            name, up = payload
            self.link(name, up)
            return
        now = self.sim.now
        if self._armed is not None and self._armed <= now:
            self._armed = None
        self.model.on_timer(now)
        while (item := self.model.next_result()) is not None:
            name, result = item
            pump = self.sim.pump(name)
            if pump is None:
                self.counters[WanCounter.DHT_RESULTS_DROPPED] += 1
                continue
            self.counters[WanCounter.DHT_RESULTS] += 1
            pump.dht_result(result, now)
        self.arm()

    # ------------------------------------------------------------ measuring
    def on_record(self, rec: JournalRecord) -> None:
        payload = rec.payload
        if isinstance(payload, UplinkChanged):
            self.transitions[f"{payload.previous}->{payload.state}"] += 1

    def report(self, messages: list[MessageRecord], island: dict[str, int],
               parts: Counter[str]) -> dict[str, object]:
        cross = [r for r in messages if island.get(r.src) != island.get(r.dst)]
        latency = [r.received_at[0] - r.sent_at for r in cross if r.received_at]
        once = sum(1 for r in cross if len(r.received_at) == 1)
        return {
            "wans": len(self.specs),
            "uplinked": sorted(self.members),
            "cross_site_messages": {
                "sent": len(cross),
                "delivered": sum(1 for r in cross if r.received_at),
                "delivered_once": once,
                "delivered_once_fraction": round(once / len(cross), 6) if cross else 1.0,
                "duplicates": sum(max(0, len(r.received_at) - 1) for r in cross),
                "held": sum(1 for r in cross if r.outcome == 202),
                "failed": sum(1 for r in cross if r.outcome is not None and r.outcome >= 300),
                "failed_by_status": dict(sorted(Counter(
                    str(r.outcome) for r in cross if not r.received_at
                    and r.outcome is not None and r.outcome >= 300).items())),
                "pending_at_end": sum(1 for r in cross if not r.received_at
                                      and (r.outcome is None or r.outcome == 202)),
                "latency_s": {"p50": round(percentile(latency, 0.5), 4),
                              "p95": round(percentile(latency, 0.95), 4),
                              "max": round(max(latency, default=0.0), 4)},
            },
            "resolution": self.probe.report(),
            "transitions": dict(sorted(self.transitions.items())),
            "transitions_total": sum(self.transitions.values()),
            "wan": dict(sorted(self.counters.items())),
            "counters": dict(sorted(parts.items())),
        }
