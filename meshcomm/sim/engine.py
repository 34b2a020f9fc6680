"""Discrete-event simulator driving MeshNode cores (or the naive-flood baseline) in
virtual time over a lossy broadcast medium. Deterministic for a seed.

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

from meshcomm.errors import DecodeError
from meshcomm.journal.events import JournalEventType as J
from meshcomm.journal.events import JournalRecord
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.overlay.media import MediaReceived
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sim.baseline import NaiveFloodNode
from meshcomm.sim.metrics import Metrics
from meshcomm.sim.topology import LinkSpec, Topology
from meshcomm.types import LinkAddr
from meshcomm.wire import codec
from meshcomm.wire.envelope import Envelope, Hop, decode_frame_untrusted

#: Radio bit rate used for airtime (802.11 basic rate for broadcast frames).
AIRTIME_BPS = 6_000_000
#: A leaving node is checked this often for an acknowledged departure during its grace.
LEAVE_POLL_S = 0.05
VERIFY_CACHE_ENTRIES = 1 << 18
DOMAIN = "incident.local"


class MemoDecoder:
    """Shares frame decoding among the simulated nodes that hear the same transmission.

    Decoding is a pure function of the bytes and the results are immutable in use, so
    this changes the simulator's speed, not its outcome."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._cache: dict[bytes, tuple[Envelope, Hop] | DecodeError] = {}

    def __call__(self, data: bytes) -> tuple[Envelope, Hop]:
        hit = self._cache.get(data)
        if hit is None:
            try:
                hit = decode_frame_untrusted(data)
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


class _Ev(Enum):
    DELIVER = 0
    TIMER = 1
    ACTION = 2
    START = 3
    REGISTER = 4
    CALL = 5
    LEFT = 6


Core = MeshNode | NaiveFloodNode
Observer = Callable[[float, str, dict[str, object]], None]


@dataclass(slots=True)
class _Slot:
    name: str
    identity: Identity
    rng: random.Random
    core: Core | None = None
    timer_gen: int = 0
    armed_at: float | None = None
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
        self.progress = progress
        self.observer = observer
        master = random.Random(config.seed)
        self._medium_rng = random.Random(master.getrandbits(64))
        self._verifier = SignatureVerifier(VERIFY_CACHE_ENTRIES)
        self._decoder = MemoDecoder()
        self._slots: dict[str, _Slot] = {}
        for name in config.topology.names:
            seed_bytes = hashlib.sha256(f"meshcomm-sim:{config.seed}:{name}".encode()).digest()
            self._slots[name] = _Slot(name, Identity(seed_bytes),
                                      random.Random(master.getrandbits(64)))
        self._heap: list[tuple[float, int, _Ev, str, object]] = []
        self._n = 0
        self._cut: set[frozenset[str]] = set()
        self.now = 0.0
        self.metrics = Metrics(self._converged if observer else None)
        self._trace = hashlib.sha256()
        self.counters: Counter[str] = Counter()
        #: (time, node, event) of every unicast delivered to its destination
        self.unicasts: list[tuple[float, str, UnicastReceived]] = []
        #: (time, node, event) of every media frame delivered to its destination
        self.media: list[tuple[float, str, MediaReceived]] = []

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
        """Collect output of a node after a command was given to it directly."""
        self._after(self._slots[name])

    def node_names(self) -> list[str]:
        return list(self._slots)

    def core(self, name: str) -> Core | None:
        return self._slots[name].core

    # ------------------------------------------------------------ scheduling
    def _push(self, when: float, kind: _Ev, name: str, payload: object = None) -> None:
        self._n += 1
        heapq.heappush(self._heap, (when, self._n, kind, name, payload))

    def _arm(self, slot: _Slot) -> None:
        core = slot.core
        when = core.next_timer() if core is not None else None
        if when == slot.armed_at:
            return
        slot.timer_gen += 1
        slot.armed_at = when
        if when is not None:
            self._push(max(when, self.now), _Ev.TIMER, slot.name, slot.timer_gen)

    # ------------------------------------------------------------ node lifecycle
    def _start(self, slot: _Slot) -> None:
        slot.boots += 1
        settings = self.config.settings
        role = self.config.roles.get(slot.name, settings.role)
        if role != settings.role:
            settings = dataclasses.replace(settings, role=role)
        if self.config.baseline == "flood":
            slot.core = NaiveFloodNode(slot.identity, settings, verifier=self._verifier,
                                       rng=slot.rng, now=self.now, frame_decoder=self._decoder)
        else:
            slot.core = MeshNode(slot.identity, settings, verifier=self._verifier, rng=slot.rng,
                                 now=self.now, seq_base=slot.boots << 32,
                                 frame_decoder=self._decoder)
        self.metrics.node_up(slot.name)
        self._observe("start", node=slot.name, role=role, boot=slot.boots)
        lo, hi = self.config.register_delay_s
        self._push(self.now + slot.rng.uniform(lo, hi), _Ev.REGISTER, slot.name, slot.boots)
        self._after(slot)

    def _stop(self, slot: _Slot, graceful: bool) -> None:
        if slot.core is None:
            return
        if slot.leaving_until is not None:
            if graceful:
                return
            self._gone(slot)
            return
        if graceful:
            slot.core.shutdown(self.now)
            self._after(slot)
        self.metrics.node_down(slot.name)
        self._observe("stop", node=slot.name, graceful=graceful)
        if graceful and self.config.leave_grace_s > 0:
            slot.leaving_until = self.now + self.config.leave_grace_s
            self._push(self.now + LEAVE_POLL_S, _Ev.LEFT, slot.name, slot.boots)
            return
        self._gone(slot)

    def _gone(self, slot: _Slot) -> None:
        slot.core = None
        slot.leaving_until = None
        self._arm(slot)

    def _leaving(self, slot: _Slot, boot: object) -> None:
        """During a leaving node's grace: gone once its departure is acknowledged."""
        core, until = slot.core, slot.leaving_until
        if boot != slot.boots or core is None or until is None:
            return
        if self.now >= until or (isinstance(core, MeshNode) and core.departure_done):
            self._gone(slot)
        else:
            self._push(self.now + LEAVE_POLL_S, _Ev.LEFT, slot.name, slot.boots)

    # ------------------------------------------------------------ the medium
    def _after(self, slot: _Slot) -> None:
        core = slot.core
        if core is None:
            return
        for dgram in core.to_send(self.now):
            self._transmit(slot.name, dgram.data, dgram.dst)
        while (event := core.next_event()) is not None:
            if isinstance(event, JournalRecord):
                self._record(slot.name, event)
            elif isinstance(event, UnicastReceived):
                self.unicasts.append((self.now, slot.name, event))
            else:
                self.media.append((self.now, slot.name, event))
        self._arm(slot)

    def _transmit(self, src: str, data: bytes, dst: LinkAddr | None) -> None:
        self.metrics.transmitted(len(data))
        airtime = len(data) * 8 / AIRTIME_BPS
        links = self.config.topology.neighbours(src)
        targets: list[tuple[str, LinkSpec]]
        if dst is None:
            targets = list(links.items())
        else:
            spec = links.get(dst)
            targets = [] if spec is None else [(dst, spec)]
        rnd = self._medium_rng.random
        cut = self._cut  # empty unless a partition is in force: skip the set lookups
        for name, spec in targets:
            if cut and frozenset((src, name)) in cut:
                continue
            if spec.loss and rnd() < spec.loss:
                self.counters["medium_lost"] += 1
                continue
            self._push(self.now + spec.delay_s + airtime, _Ev.DELIVER, name, (data, src))

    def _record(self, name: str, rec: JournalRecord) -> None:
        if self.journal is not None:
            self.journal.setdefault(name, []).append((self.now, rec))
        self._trace.update(codec.pack([round(self.now, 6), name, rec.type.value,
                                       dict(rec.data)]))
        if rec.type in (J.BINDING_LEARNED, J.BINDING_UPDATED):
            record = rec.data.get("record")
            seq = rec.data.get("seq")
            if not isinstance(record, bytes) or not isinstance(seq, int):
                return
            if rec.data.get("via") == "":
                self.metrics.announced(name, record, seq, rec.data.get("lifetime_s") == 0,
                                       self.now)
            else:
                self.metrics.learned(name, record, seq, self.now)

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
        end = self.config.duration_s
        next_progress = 10.0
        while self._heap and self._heap[0][0] <= end:
            when, _, kind, name, payload = heapq.heappop(self._heap)
            self.now = when
            if self.progress is not None and when >= next_progress:
                self.progress(when, end)
                next_progress += 10.0
            self._dispatch(kind, name, payload)
        self.now = end
        return self.summary()

    def _dispatch(self, kind: _Ev, name: str, payload: object) -> None:
        if kind is _Ev.ACTION:
            assert isinstance(payload, Action)
            self._apply(payload)
            return
        if kind is _Ev.CALL:
            assert callable(payload)
            payload(self)
            return
        slot = self._slots[name]
        if kind is _Ev.LEFT:
            self._leaving(slot, payload)
            return
        if kind is _Ev.START:
            if slot.core is None:
                self._start(slot)
            return
        core = slot.core
        if core is None:
            return
        if kind is _Ev.REGISTER:
            if payload == slot.boots and slot.leaving_until is None:
                self._observe("register", node=slot.name)
                core.register(f"sip:{slot.name}@{DOMAIN}", (f"mesh:{slot.name}",), self.now)
        elif kind is _Ev.DELIVER:
            assert isinstance(payload, tuple)
            core.receive(payload[0], LinkAddr(payload[1]), self.now)
        else:
            if payload != slot.timer_gen:
                return
            slot.armed_at = None
            core.on_timer(self.now)
        self._after(slot)

    # ------------------------------------------------------------ results
    def summary(self) -> dict[str, object]:
        live = {n: s.core for n, s in self._slots.items()
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
        return result
