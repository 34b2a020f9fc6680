"""The one pump: moves inputs, events and datagrams between a :class:`NodeCore` and its
edge. The asyncio driver, the simulator and every test harness use it.

An **edge** (:class:`Edge`) is what a node runs on: radios or a simulated medium, a SQLite
file or memory, a journal, sockets or simulated clients. The pump calls it; it never calls
the core itself.

Inputs go through the pump (:meth:`Pump.radio`, :meth:`Pump.sip`, :meth:`Pump.client_media`,
:meth:`Pump.dht_result`, :meth:`Pump.timer`, :meth:`Pump.command`): the core takes the
input, then the pump runs once. One run, in this order (the documented order of the
architecture guide):

1. **drain** the core's events; ``SfPersist`` events are set aside, the rest kept in order;
2. **persist** the set-aside batch (``Edge.store``, one transaction) and report the
   outcome to the core (``NodeCore.persisted``); that may release answers (a held
   MESSAGE's 202, or 500 when the write failed): back to 1 for them;
3. **persist freshness**: the freshness memory's changes (``Edge.store_freshness``); on
   failure they are handed back to the core and retried with the next run;
4. **transmit** the core's datagrams (``Edge.transmit``);
5. **deliver** the kept events: journal records, SIP for local clients, media for local
   clients, the DHT bridge's operations, anything else (``Edge.record`` / ``to_client`` /
   ``to_client_media`` / ``dht`` / ``other``); a SIP message's record is built now
   (:class:`~meshcomm.node.gateway.parts.PendingSipRecord`), off the message's way out.
   Datagrams the edge's handling of them produced are transmitted at once;
6. **arm** the edge's one timer for ``core.next_timer()`` (always, whatever failed). An
   edge built with ``arm_later`` is told instead and calls :meth:`Pump.arm` itself, once for
   many runs (the runtime: once per loop turn, so a batch of datagrams read in one go costs
   one ``next_timer()``, asked after the datagrams went out).

So nothing a core produced leaves the node -- no receipt, no 200, no re-flooded binding --
before the state it depends on is durable. Steps run under the edge's fault containment
(:class:`Faults`): in the runtime a failing step is counted, journaled and logged and the
rest of the run continues; the simulator and tests run uncontained (a bug surfaces).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from enum import Enum
from typing import Protocol, TypeVar

from meshcomm.dht.port import DhtCancel, DhtGet, DhtListen, DhtOp, DhtPut, DhtResult
from meshcomm.journal.events import JournalRecord
from meshcomm.location.freshness import FreshnessUpdates
from meshcomm.media.packet import Channel
from meshcomm.media.session import ClientPacket
from meshcomm.node.core import NodeCore, NodeEvent
from meshcomm.node.gateway.parts import PendingSipRecord
from meshcomm.node.gateway.types import Address, LocalDatagram
from meshcomm.node.storeforward import SfPersist
from meshcomm.types import Datagram, LinkAddr

log = logging.getLogger(__name__)

#: Drain/persist rounds of one run (persisting settles in one or two).
MAX_PUMP_ROUNDS = 8
_T = TypeVar("_T")


class Edge(Protocol):
    """What a node runs on (see the module docstring)."""

    def transmit(self, dgram: Datagram) -> None: ...

    def store(self, batch: list[SfPersist]) -> bool:
        """Apply a store-and-forward batch durably; False if the write failed."""
        ...

    def store_freshness(self, updates: FreshnessUpdates) -> bool:
        """Write the freshness memory's changes durably; False if the write failed."""
        ...

    def record(self, record: JournalRecord) -> None: ...

    def to_client(self, dgram: LocalDatagram) -> None: ...

    def to_client_media(self, packet: ClientPacket) -> None: ...

    def dht(self, op: DhtOp) -> None:
        """Carry out a DHT operation of the node's bridge (results come back through
        :meth:`Pump.dht_result`)."""
        ...

    def other(self, event: object) -> None: ...

    def arm(self, deadline: float | None) -> None:
        """(Re)arm the edge's one timer (None: no timer)."""
        ...


class Faults(Protocol):
    """Fault containment of an edge (``meshcomm.runtime.containment.Containment``)."""

    def step(self, name: str) -> AbstractContextManager[None]: ...

    def contain(self, step: str, exc: BaseException) -> None: ...


class Output(Enum):
    """Kinds of events the pump delivers to the edge (:data:`OUTPUT_OF`)."""

    JOURNAL = "journal"
    PENDING_RECORD = "pending_record"     # a journal record built when delivered
    TO_CLIENT = "to_client"
    TO_CLIENT_MEDIA = "to_client_media"
    DHT = "dht"
    OTHER = "other"


#: Event type -> how the edge takes it (anything else: ``Edge.other``).
OUTPUT_OF: dict[type, Output] = {
    JournalRecord: Output.JOURNAL,
    PendingSipRecord: Output.PENDING_RECORD,
    LocalDatagram: Output.TO_CLIENT,
    ClientPacket: Output.TO_CLIENT_MEDIA,
    **{op: Output.DHT for op in (DhtPut, DhtGet, DhtListen, DhtCancel)},
}
_UNCONTAINED = nullcontext()


class Pump:
    """Drives one :class:`NodeCore` on one :class:`Edge` (see the module docstring)."""

    def __init__(self, core: NodeCore, edge: Edge, faults: Faults | None = None, *,
                 arm_later: Callable[[], None] | None = None) -> None:
        self.core = core
        self.edge = edge
        self.faults = faults
        #: Called after a run instead of arming (the edge then calls :meth:`arm`).
        self.arm_later = arm_later
        self._deliver: dict[Output, Callable[[NodeEvent], None]] = {
            Output.JOURNAL: edge.record,          # type: ignore[dict-item]
            Output.PENDING_RECORD: self._pending_record,  # type: ignore[dict-item]
            Output.TO_CLIENT: edge.to_client,      # type: ignore[dict-item]
            Output.TO_CLIENT_MEDIA: edge.to_client_media,  # type: ignore[dict-item]
            Output.DHT: edge.dht,                  # type: ignore[dict-item]
            Output.OTHER: edge.other,
        }

    # ------------------------------------------------------------ inputs
    def radio(self, data: bytes, src: LinkAddr, now: float) -> None:
        self._input("radio_input", now, self.core.receive, data, src, now)

    def sip(self, data: bytes, src: Address, now: float) -> None:
        self._input("sip_input", now, self.core.receive_sip, data, src, now)

    def sip_batch(self, batch: list[tuple[bytes, Address]], now: float) -> None:
        """Several SIP datagrams read in one go: each to the core, then one run."""
        for data, src in batch:
            self._call("sip_input", now, self.core.receive_sip, data, src, now)
        self.run(now)

    def client_media(self, call_id: str, index: int, channel: Channel, data: bytes,
                     now: float) -> None:
        self._input("media_input", now, self.core.receive_client_media, call_id, index,
                    channel, data, now)

    def dht_result(self, result: DhtResult, now: float) -> None:
        self._input("dht_input", now, self.core.receive_dht, result, now)

    def timer(self, now: float) -> None:
        self._input("timer", now, self.core.on_timer, now)

    def command(self, now: float, fn: Callable[[], _T]) -> _T:
        """Run a command on the core (register, send a message...), then the pump.
        Unlike inputs, a command's failure is the caller's: it propagates (after the run)."""
        try:
            return fn()
        finally:
            self.run(now)

    # ------------------------------------------------------------ the run
    def run(self, now: float) -> None:
        """Steps 1-6 of the module docstring; repeated while the transmit left events
        behind (at most :data:`MAX_PUMP_ROUNDS` times)."""
        try:
            for round_no in range(MAX_PUMP_ROUNDS):
                kept = self._drain_and_persist(now)
                if round_no and not kept:
                    break
                self._deliver_and_transmit(kept, now)
        finally:
            if self.arm_later is None:
                self.arm(now)
            else:
                self.arm_later()

    def _deliver_and_transmit(self, kept: list[NodeEvent], now: float) -> None:
        step, deliver = self._step, self._deliver
        with step("freshness"):
            self._persist_freshness()
        self._transmit(now)
        for event in kept:
            with step("event"):
                deliver[OUTPUT_OF.get(type(event), Output.OTHER)](event)
        if kept:
            self._transmit(now)

    def _transmit(self, now: float) -> None:
        edge, step = self.edge, self._step
        with step("to_send"):
            for dgram in self.core.to_send(now):
                with step("transmit"):
                    edge.transmit(dgram)

    def _pending_record(self, pending: PendingSipRecord) -> None:
        self.edge.record(pending.record())

    def _drain_and_persist(self, now: float) -> list[NodeEvent]:
        kept: list[NodeEvent] = []
        core = self.core
        for _ in range(MAX_PUMP_ROUNDS):
            batch: list[SfPersist] = []
            with self._step("events"):
                while (event := core.next_event()) is not None:
                    if type(event) is SfPersist:
                        batch.append(event)
                    else:
                        kept.append(event)
            if not batch:
                break
            ok = False
            with self._step("persist"):
                ok = self.edge.store(batch)
            with self._step("persisted"):
                core.persisted([e.msg_id for e in batch], ok, now)
        return kept

    def _persist_freshness(self) -> None:
        updates = self.core.take_freshness_updates()
        if updates and not self.edge.store_freshness(updates):
            self.core.requeue_freshness(updates)

    def arm(self, now: float) -> None:
        """Step 6: arm the edge's timer for ``core.next_timer()``."""
        try:
            deadline = self.core.next_timer()
        except Exception as exc:
            if self.faults is None:
                raise
            self.faults.contain("next_timer", exc)
            deadline = now + TIMER_RETRY_S
        self.edge.arm(deadline)

    # ------------------------------------------------------------ containment
    def _step(self, name: str) -> AbstractContextManager[None]:
        faults = self.faults
        return _UNCONTAINED if faults is None else faults.step(name)

    def _call(self, kind: str, now: float, fn: Callable[..., object], *args: object) -> None:
        if self.faults is None:
            fn(*args)
            return
        try:
            fn(*args)
        except Exception as exc:  # contained: the node keeps running
            self.faults.contain(kind, exc)
            with self.faults.step("settle"):
                self.core.settle(now)   # what was queued before the failure goes out now

    def _input(self, kind: str, now: float, fn: Callable[..., object], *args: object) -> None:
        if self.faults is None:
            fn(*args)
        else:
            self._call(kind, now, fn, *args)
        self.run(now)


#: When the core's next_timer() failed (contained), the timer fires again this soon.
TIMER_RETRY_S = 0.5
