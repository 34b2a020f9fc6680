"""NodeDriver: the thin asyncio edge of one node (ARCHITECTURE.md rule 3).

The driver owns the sans-IO :class:`~meshcomm.node.mesh.MeshNode`, the opened radios and the
node's journal. It only moves things between them:

* a radio callback feeds ``node.receive(data, LinkAddr(f"{radio.name}|{src}"), loop.time())``;
* after every input, command or timer it drains ``to_send`` (``dst`` None goes out on every
  radio, otherwise the link address is split at the first ``"|"`` to pick the radio), drains
  ``next_event`` (journal records are stamped with monotonic and wall-clock time and appended
  to the journal; other events go to an optional sink, else are logged at debug level), and
  arms exactly one loop timer for ``next_timer()``;
* with a gateway's media relay (:attr:`NodeDriver.media`), ``MediaReceived`` events go to
  ``media.on_media`` and :meth:`NodeDriver.send_media` is its sender (send, then pump);
* with store-and-forward (:attr:`NodeDriver.sf_storage`), ``SfPersist`` events are applied
  to the node's SQLite file (one transaction per batch) *before* the datagrams of the same
  pump are transmitted: a delivery receipt or a 200 never leaves before the delivered id
  is on disk; the outcome is reported to the core (``SipNode.persisted``), and the answers
  it releases (a held MESSAGE's 202, or 500 when the write failed) go out in the same pump;
* with a freshness store (:attr:`NodeDriver.fresh_store`), the changes of the node's
  freshness memory (highest accepted sequence per AoR and key) are written in one
  transaction per pump, also before the pump's datagrams go out: a binding this node
  re-floods is remembered across a restart (a failed write is retried with the next pump);
* the journal is flushed (one durable SQLite transaction) at most once per loop turn:
  appends schedule one ``call_soon`` flush; a record whose data the journal cannot store
  (a peer's out-of-range number) is stored normalised (``codec.storable_data``), counted;
* the failure of one step never stops the node: an exception from the core's input,
  one event's consumer, the transmit or the local SIP sink is contained
  (:class:`~meshcomm.runtime.containment.Containment`: counted, journaled, logged once
  per kind then rate-limited), and the rest of the pump, the transmit and the timer
  always run, so nothing waits for the next input.

Time given to the core is ``loop.time()`` (monotonic); wall-clock time is
``loop.time() + wall_offset_s``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence

from meshcomm.errors import LocalProtocolError
from meshcomm.journal.codec import storable_data
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.store import JournalStore
from meshcomm.location.binding import Binding
from meshcomm.media.session import MeshMedia
from meshcomm.node.freshness_store import FreshnessStore
from meshcomm.node.gateway.types import Address, LocalDatagram
from meshcomm.node.gateway_host import SipNode
from meshcomm.node.mesh import MeshNode
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import SfPersist
from meshcomm.overlay.core import WhoEntry
from meshcomm.overlay.media import MediaReceived
from meshcomm.runtime.containment import Containment
from meshcomm.runtime.media_io import MediaIO
from meshcomm.runtime.onetimer import OneTimer
from meshcomm.runtime.sipgw import SipSockets
from meshcomm.types import Datagram, LinkAddr
from radios.base import LINK_ADDR_SEPARATOR, Radio

log = logging.getLogger(__name__)

#: Callback for core events other than journal records (e.g. unicast deliveries).
EventSink = Callable[[object], None]
#: Sends a SIP message to a local client (the gateway's sockets).
SipSink = Callable[[LocalDatagram], None]
#: Persist/report/transmit rounds of one pump (persisting settles in one or two).
MAX_PUMP_ROUNDS = 4
#: A failing store-and-forward write is logged at most this often (the rest counted).
PERSIST_ERROR_LOG_INTERVAL_S = 10.0
#: When the core's next_timer() failed, the timer fires again this soon.
TIMER_RETRY_S = 0.5


class NodeDriver:
    """Drives one MeshNode on an asyncio loop. Not thread-safe; use on the loop only."""

    def __init__(self, node: MeshNode, radios: Sequence[Radio], journal: JournalStore | None,
                 loop: asyncio.AbstractEventLoop, *, wall_offset_s: float,
                 event_sink: EventSink | None = None, sip: SipNode | None = None,
                 sip_sink: SipSink | None = None) -> None:
        names = [radio.name for radio in radios]
        if len(set(names)) != len(names):
            raise LocalProtocolError(f"radio names must be unique: {names}")
        self.node = node
        #: With a SIP gateway the driver drives the composed SipNode, else the MeshNode.
        self.sip = sip
        self.core: MeshNode | SipNode = sip if sip is not None else node
        self.sip_sink = sip_sink
        #: The gateway's sockets (for status), set by run_node.
        self.sip_sockets: SipSockets | None = None
        #: The gateway's media relay edge, set by run_node (MediaReceived events go there).
        self.media: MediaIO | None = None
        #: The store-and-forward database, set by run_node (SfPersist events go there).
        self.sf_storage: SfStorage | None = None
        #: The freshness database, set by run_node (the memory's changes go there).
        self.fresh_store: FreshnessStore | None = None
        self.journal = journal
        self.loop = loop
        self.wall_offset_s = wall_offset_s
        self.event_sink = event_sink
        self.radios: dict[str, Radio] = {radio.name: radio for radio in radios}
        self.started_at = loop.time()
        self.counters: dict[str, int] = {"tx_unknown_radio": 0, "tx_errors": 0,
                                         "journal_flush_errors": 0, "media_send_errors": 0,
                                         "sf_persist_errors": 0,
                                         "freshness_persist_errors": 0,
                                         "journal_records_normalised": 0}
        #: Failures of one step, contained (see the module docstring).
        self.faults = Containment(self.counters, clock=loop.time, journal=self._journal)
        self._timer = OneTimer(loop, self._on_timer)
        self._flush_pending = False
        self._closed = False
        self._persist_error_logged_at = float("-inf")
        self._fresh_error_logged_at = float("-inf")

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Install radio receivers and process what the core queued at construction."""
        for radio in self.radios.values():
            radio.set_receiver(functools.partial(self.receive, radio.name))
        self.pump()

    def close(self) -> None:
        """Cancel the timer, close the radios, flush and close the journal. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._timer.cancel()
        for radio in self.radios.values():
            radio.close()
        if self.journal is not None:
            self.journal.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def armed_at(self) -> float | None:
        """Loop time the one timer is armed for (None: no timer)."""
        return self._timer.armed_at

    def now(self) -> float:
        return self.loop.time()

    def wall_time(self, now: float) -> float:
        return now + self.wall_offset_s

    # ------------------------------------------------------------ inputs
    def receive(self, radio_name: str, data: bytes, src: str) -> None:
        if self._closed:
            return
        try:
            self.core.receive(data, LinkAddr(f"{radio_name}{LINK_ADDR_SEPARATOR}{src}"),
                              self.now())
        except Exception as exc:  # contained: the node keeps running
            self._contained_input("radio_input", exc)
        self.pump()

    def receive_sip(self, data: bytes, src: Address) -> None:
        """A SIP message from a local client (UDP datagram or framed TCP message)."""
        if self._closed or self.sip is None:
            return
        try:
            self.sip.receive_sip(data, src, self.now())
        except Exception as exc:  # contained: the node keeps running
            self._contained_input("sip_input", exc)
        self.pump()

    def receive_sip_batch(self, batch: Sequence[tuple[bytes, Address]]) -> None:
        """Datagrams read from the SIP socket in one go (sipgw drains it in batches so
        the kernel queue does not overflow under a flood): each to the gateway, then one
        pump for the whole batch."""
        if self._closed or self.sip is None:
            return
        now = self.now()
        for data, src in batch:
            try:
                self.sip.receive_sip(data, src, now)
            except Exception as exc:  # contained: the node keeps running
                self._contained_input("sip_input", exc)
        self.pump()

    def _on_timer(self) -> None:
        if self._closed:
            return
        try:
            self.core.on_timer(self.now())
        except Exception as exc:  # contained: the timer is re-armed
            self._contained_input("timer", exc)
        self.pump()

    def _contained_input(self, kind: str, exc: Exception) -> None:
        """An input failed inside the core: contained, and the SIP node's queues are
        settled now (an answer the gateway queued before the failure goes out in this
        pump, not with the next input)."""
        self.faults.contain(kind, exc)
        if self.sip is not None:
            with self.faults.step("settle"):
                self.sip.settle(self.now())

    # ------------------------------------------------------------ commands
    def register(self, aor: str, contacts: tuple[str, ...]) -> Binding:
        binding = self.node.register(aor, contacts, self.now())
        self.pump()
        return binding

    def deregister(self, aor: str) -> Binding | None:
        binding = self.node.deregister(aor, self.now())
        self.pump()
        return binding

    def shutdown(self) -> None:
        """Withdraw the node's registrations (tombstones go out now) and stop refreshing."""
        self.node.shutdown(self.now())
        self.pump()

    def send_message(self, to_aor: str, text: str) -> int:
        """Send a MESSAGE from the node's AoR through the gateway's built-in UA."""
        if self.sip is None:
            raise LocalProtocolError("this node runs without a SIP gateway")
        send_id = self.sip.gateway.send_message(to_aor, text, self.now())
        self.sip.settle(self.now())
        self.pump()
        return send_id

    def hold_pending_messages(self) -> int:
        """Stopping: hand the gateway's MESSAGEs still waiting for a far node to
        store-and-forward and persist them now (each is answered 202 once on disk, 500 if
        the write fails). Returns how many were handed over."""
        if self._closed or self.sip is None:
            return 0
        handed = self.sip.hold_pending(self.now())
        self.pump()
        if handed:
            log.info("stopping: %d pending MESSAGE(s) handed to store-and-forward", handed)
        return handed

    def send_media(self, frame: MeshMedia) -> None:
        """A media frame from a client's call port goes over the mesh now (MediaIO's
        ``send_media``): ``MeshNode.send_media`` then a pump."""
        if self._closed:
            return
        try:
            self.node.send_media(frame.dst_node, frame.stream, frame.payload, self.now())
        except LocalProtocolError as exc:      # a bad frame from the media layer: a bug
            self.counters["media_send_errors"] += 1
            log.warning("media frame not sent: %s", exc)
            return
        self.pump()

    def who(self) -> list[WhoEntry]:
        return self.node.overlay.who(self.now())

    # ------------------------------------------------------------ outputs
    def pump(self) -> None:
        """Drain datagrams and events, re-arm the one timer (always, whatever fails)."""
        if self._closed:
            return
        now = self.now()
        try:
            for _ in range(MAX_PUMP_ROUNDS):
                if not self._pump_round(now):
                    break                # nothing released by a persist: all sent
        finally:
            self._arm()

    def _pump_round(self, now: float) -> bool:
        """One persist/transmit round, each step contained; True if a persist was reported
        after the transmit (the core may have answers to send)."""
        faults = self.faults
        with faults.step("events"):
            self._drain_events(now)      # persisted state first, then what goes out
        with faults.step("freshness"):
            self._persist_freshness(now)
        with faults.step("to_send"):
            for dgram in self.core.to_send(now):
                with faults.step("transmit"):
                    self._transmit(dgram)
        if self.sip is not None:
            with faults.step("take_sip"):
                for local in self.sip.take_sip(now):
                    if self.sip_sink is not None:
                        with faults.step("sip_sink"):
                            self.sip_sink(local)
        with faults.step("events"):
            return self._drain_events(now)
        return False

    def _drain_events(self, now: float) -> bool:
        """Events to their consumers; each batch of SfPersist applied and reported to the
        core. True if a batch was reported (the core may have answers to send)."""
        reported = False
        for _ in range(MAX_PUMP_ROUNDS):
            persist: list[SfPersist] = []
            while (event := self.core.next_event()) is not None:
                if isinstance(event, SfPersist):
                    persist.append(event)
                    continue
                with self.faults.step("event"):
                    self._consume(event, now)
            if not persist:
                break
            ok = self._persist(persist, now)
            if self.sip is not None:
                self.sip.persisted([e.msg_id for e in persist], ok, now)
            reported = True
        return reported

    def _consume(self, event: object, now: float) -> None:
        if isinstance(event, JournalRecord):
            self._journal(event, now)
        elif isinstance(event, MediaReceived) and self.media is not None:
            self.media.on_media(event)
        elif self.event_sink is not None:
            self.event_sink(event)
        else:
            log.debug("event without a consumer: %r", event)

    def _persist(self, events: list[SfPersist], now: float) -> bool:
        """Apply a batch in one transaction; False if the write failed (counted, logged
        at most every PERSIST_ERROR_LOG_INTERVAL_S)."""
        if self.sf_storage is None:
            log.debug("store-and-forward without storage (memory only): %d event(s)",
                      len(events))
            return True
        try:
            self.sf_storage.apply_all(events)
        except sqlite3.Error as exc:
            self.counters["sf_persist_errors"] += 1
            if now - self._persist_error_logged_at >= PERSIST_ERROR_LOG_INTERVAL_S:
                self._persist_error_logged_at = now
                log.error("store-and-forward %s: write failed (%d so far): %s",
                          self.sf_storage.path, self.counters["sf_persist_errors"], exc)
            return False
        return True

    def _persist_freshness(self, now: float) -> None:
        """Write the freshness memory's changes; on failure keep them for the next pump
        (counted, logged at most every PERSIST_ERROR_LOG_INTERVAL_S)."""
        if self.fresh_store is None:
            return
        updates = self.node.take_freshness_updates()
        if not updates:
            return
        try:
            self.fresh_store.apply(updates)
        except sqlite3.Error as exc:
            self.node.table.freshness.requeue(updates)
            self.counters["freshness_persist_errors"] += 1
            if now - self._fresh_error_logged_at >= PERSIST_ERROR_LOG_INTERVAL_S:
                self._fresh_error_logged_at = now
                log.error("freshness %s: write failed (%d so far): %s", self.fresh_store.path,
                          self.counters["freshness_persist_errors"], exc)

    def _transmit(self, dgram: Datagram) -> None:
        if dgram.dst is None:
            for radio in self.radios.values():
                self._send(radio, dgram.data, None)
            return
        name, sep, addr = dgram.dst.partition(LINK_ADDR_SEPARATOR)
        target = self.radios.get(name)
        if not sep or target is None:
            self.counters["tx_unknown_radio"] += 1
            log.debug("datagram for unknown link address %r dropped", dgram.dst)
            return
        self._send(target, dgram.data, addr)

    def _send(self, radio: Radio, data: bytes, dst: str | None) -> None:
        try:
            radio.send(data, dst)
        except LocalProtocolError as exc:
            # Oversize for this link or a malformed address: a bug above, not fatal.
            self.counters["tx_errors"] += 1
            log.warning("radio %s: %s", radio.name, exc)

    def _journal(self, record: JournalRecord, now: float) -> None:
        if self.journal is None:
            log.debug("journal: %s %s", record.type.value, dict(record.data))
            return
        try:
            self.journal.append_record(record, now, self.wall_time(now))
        except LocalProtocolError:
            # A value from outside the data model (a peer's number): stored as text.
            self.counters["journal_records_normalised"] += 1
            self.journal.append_record(JournalRecord(record.type, storable_data(record.data)),
                                       now, self.wall_time(now))
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self.journal is None or self._closed:
            return
        try:
            self.journal.flush_due()
        except sqlite3.Error:
            # Entries stay buffered (bounded) and are retried; the store logs the failure
            # rate-limited and reports it in status(), so nothing is logged per flush here.
            self.counters["journal_flush_errors"] += 1

    def flush_journal(self) -> int:
        """Flush now; return the durable seq (0 without a journal)."""
        if self.journal is None:
            return 0
        self._flush()
        return self.journal.durable_seq

    def _arm(self) -> None:
        try:
            deadline = self.core.next_timer()
        except Exception as exc:  # contained: retry the timer soon
            self.faults.contain("next_timer", exc)
            deadline = self.now() + TIMER_RETRY_S
        self._timer.arm(deadline)
