"""Discrete-event simulator of whole nodes in virtual time over a lossy broadcast medium.
Deterministic for a seed.

Every simulated node is a :class:`~meshcomm.node.core.NodeCore` driven through the one
:class:`~meshcomm.node.pump.Pump` on a :class:`~meshcomm.sim.edge.SimEdge`, exactly as the
runtime drives a real node: every input (a frame from the medium, a timer, a command, SIP
and media from the node's simulated client) goes in through the pump, and what the pump
hands the edge goes onto the medium, into the trace, into the node's store or to its
client. Every core is built by the runtime's :func:`~meshcomm.node.core.compose`.
Gossip-only runs (no traffic, no gateways asked for) run bare nodes (overlay and location,
as the runtime without a SIP listener); with traffic every node is whole -- SIP gateway,
end-to-end sealing, store-and-forward (custody on "relay" nodes, persisted to a real
SQLite store that survives kills) and media relay -- and carries one simulated softphone
(:mod:`meshcomm.sim.incident`, :mod:`.clients`).

The medium delivers each broadcast independently to every node that hears the sender,
losing it with the link's loss probability, after the link delay plus airtime. Scenario
actions (join, leave, kill, restart, partition, heal) are applied at their times.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from meshcomm.errors import DecodeError
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import BindingLearned, BindingUpdated
from meshcomm.node.core import NodeCore, compose
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.node.pump import Pump
from meshcomm.node.storeforward import SfPersist
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.overlay.media import MediaReceived
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sim.baseline import NaiveFloodNode
from meshcomm.sim.clients import DOMAIN
from meshcomm.sim.edge import SimEdge
from meshcomm.sim.incident import Incident
from meshcomm.sim.metrics import Metrics, SimCounter
from meshcomm.sim.topology import LinkSpec, Topology
from meshcomm.sim.traffic import TrafficPlan
from meshcomm.sim.uplinks import UPLINK_AOR_DOMAIN, UplinkSpec, Wan, uplink_aor
from meshcomm.types import UPLINK_PREFIX, Datagram, LinkAddr
from meshcomm.wire import codec
from meshcomm.wire.envelope import Hop, WireFrame, parse_frame_untrusted

#: Radio bit rate used for airtime (802.11 basic rate for broadcast frames).
AIRTIME_BPS = 6_000_000
#: A leaving node is checked this often for an acknowledged departure during its grace.
LEAVE_POLL_S = 0.05
VERIFY_CACHE_ENTRIES = 1 << 18


class MemoDecoder:
    """Shares frame decoding among the simulated nodes that hear the same transmission.

    Parsing is a pure function of the bytes and the results are immutable in use, so
    this changes the simulator's speed, not its outcome (each node rebuilds the envelope
    with its own incident and key directory)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._cache: dict[bytes, tuple[WireFrame, Hop] | DecodeError] = {}

    def __call__(self, data: bytes) -> tuple[WireFrame, Hop]:
        hit = self._cache.get(data)
        if hit is None:
            try:
                hit = parse_frame_untrusted(data)
            except DecodeError as exc:
                hit = exc
            if len(self._cache) >= self._max_entries:
                del self._cache[next(iter(self._cache))]
            self._cache[data] = hit
        if isinstance(hit, DecodeError):
            raise DecodeError(str(hit), reason=hit.reason)
        return hit


class ActionKind(Enum):
    JOIN = "join"
    LEAVE = "leave"
    KILL = "kill"
    RESTART = "restart"
    PARTITION = "partition"
    HEAL = "heal"


@dataclass(frozen=True, slots=True)
class Action:
    at_s: float
    kind: ActionKind
    nodes: tuple[str, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()


@dataclass(slots=True)
class SimConfig:
    topology: Topology
    duration_s: float
    seed: int
    settings: NodeSettings = field(default_factory=NodeSettings)
    baseline: str | None = None
    actions: list[Action] = field(default_factory=list)
    #: nodes that are not running at t=0 (they join through an action)
    absent_at_start: frozenset[str] = frozenset()
    start_spread_s: float = 1.0
    #: A node registers this long (uniform in the range) after it starts: the mesh forms,
    #: then responders register. (0, 0) registers at power-on.
    register_delay_s: tuple[float, float] = (2.0, 4.0)
    #: per-node role ("handset" default, "relay")
    roles: dict[str, str] = field(default_factory=dict)
    #: A leaving node keeps running (re-sending its tombstones) until a neighbour has
    #: acknowledged them or this long, like the runtime's shutdown grace; 0: gone at once.
    leave_grace_s: float = 3.0
    #: MESSAGEs and calls between the nodes' simulated SIP clients
    traffic: TrafficPlan = field(default_factory=TrafficPlan)
    #: Run whole nodes (gateway, store-and-forward, media relay, a SIP client each) even
    #: without traffic; with traffic they always are.
    gateways: bool = False
    #: Directory of the nodes' store-and-forward files (kept after the run); None: a
    #: temporary directory removed when the run ends.
    store_dir: Path | None = None
    #: WANs between uplinked relays of the islands (issue 10); their members run a DHT
    #: bridge and an uplink mesh (:mod:`meshcomm.sim.uplinks`)
    uplinks: tuple[UplinkSpec, ...] = ()

    @property
    def whole_nodes(self) -> bool:
        return self.gateways or bool(self.uplinks) or not self.traffic.empty


class _Ev(Enum):
    DELIVER = 0
    TIMER = 1
    ACTION = 2
    START = 3
    REGISTER = 4
    CALL = 5
    LEFT = 6
    CLIENT = 7          # an incident event (a client's datagrams, timer, media, traffic)
    WAN = 8             # the WAN's: an uplink's link change, the DHT model's timer


Observer = Callable[[float, str, dict[str, object]], None]


@dataclass(slots=True)
class _Slot:
    name: str
    identity: Identity
    rng: random.Random
    edge: SimEdge
    core: NodeCore | None = None
    pump: Pump | None = None
    boots: int = 0
    #: end of the grace of a node that is leaving (its core still runs until then)
    leaving_until: float | None = None


class Simulator:
    def __init__(self, config: SimConfig,
                 progress: Callable[[float, float], None] | None = None,
                 observer: Observer | None = None, keep_journal: bool = False) -> None:
        self.config = config
        #: per node, every journal record it emitted (only with keep_journal)
        self.journal: dict[str, list[tuple[float, JournalRecord]]] | None = (
            {} if keep_journal else None)
        #: (time, node, event) of every store-and-forward write (only with keep_journal)
        self.persisted: list[tuple[float, str, SfPersist]] | None = (
            [] if keep_journal else None)
        #: (time, node, event) of every other event a node's pump handed its edge
        #: (gateway outcomes, built-in inbox, ended media...; only with keep_journal)
        self.other_events: list[tuple[float, str, object]] | None = (
            [] if keep_journal else None)
        self.progress = progress
        self.observer = observer
        master = random.Random(config.seed)
        self._medium_rng = random.Random(master.getrandbits(64))
        self._verifier = SignatureVerifier(VERIFY_CACHE_ENTRIES)
        self._decoder = MemoDecoder()
        #: frame decoding shared by every node of the run (uplink meshes too)
        self.decoder = self._decoder
        self._slots: dict[str, _Slot] = {}
        for name in config.topology.names:
            seed_bytes = hashlib.sha256(f"meshcomm-sim:{config.seed}:{name}".encode()).digest()
            self._slots[name] = _Slot(name, Identity(seed_bytes),
                                      random.Random(master.getrandbits(64)),
                                      SimEdge(self, name))
        self._heap: list[tuple[float, int, _Ev, str, object]] = []
        self._n = 0
        self._cut: set[frozenset[str]] = set()
        self._links = config.topology.links
        self.now = 0.0
        self.metrics = Metrics(self._converged if observer else None,
                               config.topology.components() if config.uplinks else None)
        self._trace = hashlib.sha256()
        self.counters: Counter[str] = Counter()
        #: (time, node, event) of every unicast delivered to a node that has no part for it
        self.unicasts: list[tuple[float, str, UnicastReceived]] = []
        #: (time, node, event) of every media frame delivered to a node without a relay
        self.media: list[tuple[float, str, MediaReceived]] = []
        #: the uplinks' WANs and DHT model; None without [[uplink]] entries
        self.wan = Wan(self, config.uplinks, config.seed) if config.uplinks else None
        #: the whole-node side (gateways, clients, traffic); None in gossip-only runs
        self.incident = Incident(self) if config.whole_nodes else None

    def _observe(self, kind: str, **info: object) -> None:
        if self.observer is not None:
            self.observer(self.now, kind, info)

    def _converged(self, origin: str, seq: int, tombstone: bool, took_s: float) -> None:
        self._observe("converged", node=origin, seq=seq, tombstone=tombstone, took_s=took_s,
                      nodes=len(self.metrics.live))

    def call_at(self, when: float, fn: Callable[[Simulator], None]) -> None:
        """Run ``fn(sim)`` at virtual time ``when`` (tests and demos inject commands)."""
        self._push(when, _Ev.CALL, "", fn)

    def after_command(self, name: str) -> None:
        """Run the node's pump after a command was given to its core directly."""
        pump = self._slots[name].pump
        if pump is not None:
            pump.run(self.now)

    def node_names(self) -> list[str]:
        return list(self._slots)

    def core(self, name: str) -> MeshNode | None:
        """The gossip node (overlay and location) of a running node."""
        core = self._slots[name].core
        return None if core is None else core.node

    def node_core(self, name: str) -> NodeCore | None:
        """The whole node core of a running node."""
        return self._slots[name].core

    def pump(self, name: str) -> Pump | None:
        return self._slots[name].pump

    def edge(self, name: str) -> SimEdge:
        return self._slots[name].edge

    def boots(self, name: str) -> int:
        return self._slots[name].boots

    def running(self, name: str) -> bool:
        slot = self._slots[name]
        return slot.core is not None and slot.leaving_until is None

    # ------------------------------------------------------------ scheduling
    def _push(self, when: float, kind: _Ev, name: str, payload: object = None) -> None:
        self._n += 1
        heapq.heappush(self._heap, (when, self._n, kind, name, payload))

    def push_timer(self, name: str, deadline: float, gen: int) -> None:
        """A node's edge armed its timer (stale entries are skipped by generation)."""
        self._push(max(deadline, self.now), _Ev.TIMER, name, gen)

    def push_wan(self, when: float, payload: object) -> None:
        """A WAN event (see :class:`~meshcomm.sim.uplinks.Wan`) at ``when``."""
        self._push(max(when, self.now), _Ev.WAN, "", payload)

    def deliver_at(self, when: float, name: str, frame: tuple[bytes, LinkAddr]) -> None:
        """A frame reaches node ``name`` at ``when`` (the WAN's deliveries)."""
        self._push(when, _Ev.DELIVER, name, frame)

    def push_incident(self, when: float, name: str, payload: object) -> None:
        """An incident event (see :class:`~meshcomm.sim.incident.Incident`) at ``when``."""
        self._push(max(when, self.now), _Ev.CLIENT, name, payload)

    # ------------------------------------------------------------ node lifecycle
    def _start(self, slot: _Slot) -> None:
        slot.boots += 1
        settings = self.config.settings
        role = self.config.roles.get(slot.name, settings.role)
        if role != settings.role:
            settings = dataclasses.replace(settings, role=role)
        node: MeshNode
        if self.config.baseline == "flood":
            node = NaiveFloodNode(slot.identity, settings, verifier=self._verifier,
                                  rng=slot.rng, now=self.now, frame_decoder=self._decoder)
        elif self.incident is not None:
            node = self.incident.mesh_node(slot.name, slot.identity, settings, slot.rng,
                                           slot.boots, self._verifier, self._decoder)
        else:
            node = MeshNode(slot.identity, settings, verifier=self._verifier, rng=slot.rng,
                            now=self.now, seq_base=slot.boots << 32,
                            frame_decoder=self._decoder)
        core = (compose(node, now=self.now) if self.incident is None
                else self.incident.compose(slot.name, slot.identity, node, slot.boots))
        slot.core = core
        slot.pump = pump = Pump(core, slot.edge)
        if self.wan is not None:
            self.wan.node_started(slot.name)
        self.metrics.node_up(slot.name)
        self._observe("start", node=slot.name, role=role, boot=slot.boots)
        lo, hi = self.config.register_delay_s
        self._push(self.now + slot.rng.uniform(lo, hi), _Ev.REGISTER, slot.name, slot.boots)
        pump.run(self.now)

    def _stop(self, slot: _Slot, graceful: bool) -> None:
        core, pump = slot.core, slot.pump
        if core is None or pump is None:
            return
        if slot.leaving_until is not None:
            if graceful:
                return
            self._gone(slot)
            return
        if self.incident is not None:
            self.incident.client_gone(slot.name)
        if graceful:
            now = self.now
            if core.gateway is not None:    # the runtime's stop: pending MESSAGEs are held
                pump.command(now, lambda: core.hold_pending(now))
            pump.command(now, lambda: core.shutdown(now))
        self.metrics.node_down(slot.name)
        self._observe("stop", node=slot.name, graceful=graceful)
        if graceful and self.config.leave_grace_s > 0:
            slot.leaving_until = self.now + self.config.leave_grace_s
            self._push(self.now + LEAVE_POLL_S, _Ev.LEFT, slot.name, slot.boots)
            return
        self._gone(slot)

    def _gone(self, slot: _Slot) -> None:
        if self.wan is not None:
            self.wan.node_stopped(slot.name)
        slot.core = None
        slot.pump = None
        slot.leaving_until = None
        slot.edge.disarm()
        slot.edge.close_storage()

    def _leaving(self, slot: _Slot, boot: object) -> None:
        """During a leaving node's grace: gone once its departure is acknowledged."""
        core, until = slot.core, slot.leaving_until
        if boot != slot.boots or core is None or until is None:
            return
        if self.now >= until or core.departure_done:
            self._gone(slot)
        else:
            self._push(self.now + LEAVE_POLL_S, _Ev.LEFT, slot.name, slot.boots)

    def _register(self, slot: _Slot, boot: object) -> None:
        core, pump = slot.core, slot.pump
        if (boot != slot.boots or core is None or pump is None
                or slot.leaving_until is not None):
            return
        self._observe("register", node=slot.name)
        now = self.now
        aor = f"sip:{slot.name}@{DOMAIN}"
        if self.incident is not None:
            contacts = self.incident.contacts(slot.name, core)
        else:
            contacts = (f"mesh:{slot.name}",)
        pump.command(now, lambda: core.register(aor, contacts, now))
        uplink = core.uplink
        if uplink is not None:          # announced on the uplink mesh too (its routes)
            def announce() -> None:
                uplink.register(uplink_aor(uplink.node_id), (), now)
                core.settle(now)
            pump.command(now, announce)
        if self.incident is not None:
            self.incident.node_registered(slot.name)

    # ------------------------------------------------------------ the medium
    def transmit_from(self, src: str, dgram: Datagram) -> None:
        """A node's edge transmits a datagram (to every neighbour, or to link ``dst``)."""
        data, dst = dgram.data, dgram.dst
        if dst is not None and dst.startswith(UPLINK_PREFIX):
            if self.wan is None:
                self.counters[SimCounter.UPLINK_WITHOUT_WAN] += 1
            else:
                self.wan.transmit(src, dgram)
            return
        self.metrics.transmitted(len(data))
        airtime = len(data) * 8 / AIRTIME_BPS
        links = self._links.get(src, {})
        targets: list[tuple[str, LinkSpec]]
        if dst is None:
            targets = list(links.items())
        else:
            spec = links.get(dst)
            targets = [] if spec is None else [(dst, spec)]
        rnd = self._medium_rng.random
        cut = self._cut  # empty unless a partition is in force: skip the set lookups
        now = self.now
        frame = (data, LinkAddr(src))
        for name, spec in targets:
            if cut and frozenset((src, name)) in cut:
                continue
            if spec.loss and rnd() < spec.loss:
                self.counters[SimCounter.MEDIUM_LOST] += 1
                continue
            self._n += 1
            heapq.heappush(self._heap, (now + spec.delay_s + airtime, self._n, _Ev.DELIVER,
                                        name, frame))

    def record_from(self, name: str, rec: JournalRecord) -> None:
        """A node's edge hands over a journal record: trace digest, metrics, journal."""
        if self.journal is not None:
            self.journal.setdefault(name, []).append((self.now, rec))
        self._trace.update(codec.pack([round(self.now, 6), name, rec.type.value,
                                       dict(rec.data)]))
        payload = rec.payload
        if self.wan is not None:
            self.wan.on_record(rec)
            if (isinstance(payload, BindingLearned | BindingUpdated)
                    and payload.aor.endswith(UPLINK_AOR_DOMAIN)):
                return                  # the uplink mesh's: not the island's convergence
        if isinstance(payload, BindingLearned | BindingUpdated):
            if payload.via == "":
                self.metrics.announced(name, payload.record, payload.seq,
                                       payload.lifetime_s == 0, self.now)
            else:
                self.metrics.learned(name, payload.record, payload.seq, self.now)

    # ------------------------------------------------------------ actions
    def _apply(self, action: Action) -> None:
        self._observe("action", action=action.kind.value, nodes=list(action.nodes),
                      groups=[list(g) for g in action.groups])
        if action.kind is ActionKind.PARTITION:
            groups = [set(g) for g in action.groups]
            for i, g in enumerate(groups):
                for other in groups[i + 1:]:
                    self._cut.update(frozenset((a, b)) for a in g for b in other)
            return
        if action.kind is ActionKind.HEAL:
            self._cut.clear()
            return
        for name in action.nodes:
            slot = self._slots[name]
            if action.kind in (ActionKind.LEAVE, ActionKind.KILL, ActionKind.RESTART):
                self._stop(slot, graceful=action.kind is ActionKind.LEAVE)
            if action.kind is ActionKind.JOIN and slot.leaving_until is not None:
                self._gone(slot)
            if action.kind in (ActionKind.JOIN, ActionKind.RESTART) and slot.core is None:
                self._start(slot)

    # ------------------------------------------------------------ main loop
    def run(self) -> dict[str, object]:
        spread = self.config.start_spread_s
        for name, slot in self._slots.items():
            if name not in self.config.absent_at_start:
                self._push(slot.rng.uniform(0, spread), _Ev.START, name)
        for action in self.config.actions:
            self._push(action.at_s, _Ev.ACTION, "", action)
        if self.wan is not None:
            for at, name, up in self.wan.schedule(self.config.duration_s):
                self._push(at, _Ev.WAN, "", (name, up))
            self.wan.arm()
        incident = self.incident
        try:
            if incident is not None:
                incident.open()
            self._loop()
            self.now = self.config.duration_s
            return self.summary()
        finally:
            if incident is not None:
                incident.close()

    def _loop(self) -> None:
        end = self.config.duration_s
        next_progress = 10.0
        heap, slots, pop = self._heap, self._slots, heapq.heappop
        deliver, timer = _Ev.DELIVER, _Ev.TIMER
        while heap and heap[0][0] <= end:
            when, _, kind, name, payload = pop(heap)
            self.now = when
            if self.progress is not None and when >= next_progress:
                self.progress(when, end)
                next_progress += 10.0
            if kind is deliver:
                pump = slots[name].pump
                if pump is not None:
                    frame: tuple[bytes, LinkAddr] = payload  # type: ignore[assignment]
                    pump.radio(frame[0], frame[1], when)
            elif kind is timer:
                slot = slots[name]
                if slot.pump is not None and payload == slot.edge.timer_gen:
                    slot.edge.armed_at = None
                    slot.pump.timer(when)
            else:
                self._control(kind, name, payload)

    def _control(self, kind: _Ev, name: str, payload: object) -> None:
        """Events that are not a node input: actions, injected calls, node lifecycle,
        the incident (clients and traffic); node inputs go through the pump in _loop."""
        if kind is _Ev.ACTION:
            assert isinstance(payload, Action)
            self._apply(payload)
        elif kind is _Ev.CALL:
            assert callable(payload)
            payload(self)
        elif kind is _Ev.CLIENT:
            assert self.incident is not None
            self.incident.dispatch(name, payload)
        elif kind is _Ev.WAN:
            assert self.wan is not None
            self.wan.fire(payload)
        elif kind is _Ev.LEFT:
            self._leaving(self._slots[name], payload)
        elif kind is _Ev.START:
            if self._slots[name].core is None:
                self._start(self._slots[name])
        elif kind is _Ev.REGISTER:
            self._register(self._slots[name], payload)

    # ------------------------------------------------------------ results
    def summary(self) -> dict[str, object]:
        live = {n: s.core.node for n, s in self._slots.items()
                if s.core is not None and s.leaving_until is None}
        counters: Counter[str] = Counter()
        for core in live.values():
            counters.update(core.counters)
        holdings = {n: {st.binding.record_id: st.binding.is_tombstone for st in core.table}
                    for n, core in live.items()}
        result = self.metrics.report(self.now, holdings, counters)
        result["digest"] = self._trace.hexdigest()
        result["seed"] = self.config.seed
        result["baseline"] = self.config.baseline or "overlay"
        result["duration_s"] = self.config.duration_s
        result["verifications"] = self._verifier.verified
        if self.incident is not None:
            result.update(self.incident.report())
        if self.wan is not None and self.incident is not None:
            result["uplinks"] = self.wan.report(list(self.incident.stats.messages.values()),
                                                self.config.topology.components(),
                                                self._part_counters())
        return result

    def _part_counters(self) -> Counter[str]:
        """The running nodes' tunnel and DHT bridge counters, summed."""
        out: Counter[str] = Counter()
        for slot in self._slots.values():
            core = slot.core
            if core is not None and core.tunnel is not None:
                out.update(core.tunnel.counters)
            if core is not None and core.dht is not None:
                out.update(core.dht.counters)
        return out
