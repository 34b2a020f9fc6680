"""NodeDriver: the thin asyncio edge of one node (ARCHITECTURE.md rule 3).

The driver owns the radios, the node's journal and its SQLite stores, and is the
:class:`~meshcomm.node.pump.Edge` of the node's sans-IO :class:`~meshcomm.node.core.NodeCore`
(overlay, and with a gateway: SIP gateway, store-and-forward, media relay). Everything
moves through the one :class:`~meshcomm.node.pump.Pump`, in its documented order
(persist, then transmit and deliver); the driver only does the IO of each step:

* a radio callback feeds ``pump.radio(data, LinkAddr(f"{radio.name}|{src}"), loop.time())``;
  SIP from the gateway's sockets and datagrams from a call's media ports go to
  ``pump.sip`` / ``pump.sip_batch`` / ``pump.client_media``; the one loop timer to
  ``pump.timer``;
* ``transmit``: ``dst`` None goes out on every radio except the uplink radio (named
  ``meshcomm.types.UPLINK_RADIO``: the island's gossip stays in the island), otherwise the
  link address is split at the first ``"|"`` to pick the radio, and an empty address after
  it is that radio's broadcast (``"uplink|"``: every uplink peer). A driver built with
  ``node_on_uplink=True`` (``meshcomm dht-node``, whose node IS an uplink-mesh node) sends
  ``dst`` None on the uplink radio too;
* ``store``: store-and-forward's ``SfPersist`` batch in one SQLite transaction (False when
  the write failed: the core then answers 500 instead of 202); ``store_freshness``: the
  freshness memory's changes in one transaction (a failed write is retried next pump);
* ``record``: journal records are stamped with monotonic and wall-clock time when the core
  produced them and appended (hashed into the chain) just after the run's datagrams went
  out, at the start of the next loop turn together with the flush (one durable SQLite
  transaction at most once per loop turn): building an entry costs tens of microseconds,
  and the journal was never flushed before a transmit, so durability is unchanged; whoever
  reads :attr:`NodeDriver.journal` gets the store with every record appended; a record
  whose data the journal cannot store (a peer's out-of-range number) is stored normalised
  (``codec.storable_data``), counted;
* ``to_client`` / ``to_client_media``: SIP to the gateway's sockets, media from the call's
  port; ``dht``: the DHT bridge's operations to the DHT port on the uplink (whose results
  come back through :meth:`NodeDriver.receive_dht`); an ``UplinkPeers`` event (far relays'
  uplink addresses, from the DHT) adds them to the uplink radio's peers; other events go
  to an optional sink, else are logged at debug level;
* ``arm``: exactly one loop timer for ``next_timer()``, re-armed once per loop turn after the
  turn's runs (the pump's ``arm_later``), not after every input;
* the failure of one step never stops the node: the pump runs under the driver's
  :class:`~meshcomm.runtime.containment.Containment` (counted, journaled, logged once per
  kind then rate-limited), and the rest of the run, the transmit and the timer always run.

Time given to the core is ``loop.time()`` (monotonic); wall-clock time is
``loop.time() + wall_offset_s``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from meshcomm.dht.port import DhtOp, DhtResult
from meshcomm.errors import LocalProtocolError
from meshcomm.journal.codec import storable_data
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.store import JournalStore
from meshcomm.location.binding import Binding
from meshcomm.location.freshness import FreshnessUpdates
from meshcomm.media.packet import Channel
from meshcomm.media.relay import MediaCallEnded
from meshcomm.media.session import ClientPacket
from meshcomm.node.core import NodeCore
from meshcomm.node.freshness_store import FreshnessStore
from meshcomm.node.gateway.types import Address, LocalDatagram
from meshcomm.node.mesh import MeshNode
from meshcomm.node.pump import Pump
from meshcomm.node.storage import SfStorage
from meshcomm.node.storeforward import SfPersist
from meshcomm.node.tunnel import UplinkPeers
from meshcomm.overlay.core import WhoEntry
from meshcomm.runtime.containment import Containment
from meshcomm.runtime.counters import RuntimeCounter as R
from meshcomm.runtime.dht_opendht import DhtPortCounter
from meshcomm.runtime.media_io import UdpMediaPorts
from meshcomm.runtime.onetimer import OneTimer
from meshcomm.runtime.sipgw import SipSockets
from meshcomm.types import UPLINK_RADIO, Datagram, LinkAddr
from radios.base import LINK_ADDR_SEPARATOR, Radio
from radios.impair import ImpairedRadio
from radios.uplink import UplinkRadio

log = logging.getLogger(__name__)

#: Callback for core events other than journal records (e.g. unicast deliveries).
EventSink = Callable[[object], None]
#: Sends a SIP message to a local client (the gateway's sockets).
SipSink = Callable[[LocalDatagram], None]
#: The driver's own counters (the contained faults' are added when they happen).
DRIVER_COUNTERS = (R.TX_UNKNOWN_RADIO, R.TX_ERRORS, R.JOURNAL_FLUSH_ERRORS, R.SF_PERSIST_ERRORS,
                   R.FRESHNESS_PERSIST_ERRORS, R.JOURNAL_RECORDS_NORMALISED,
                   R.DHT_OPS_WITHOUT_PORT)
class DhtPortLike(Protocol):
    """What the driver (and ``ctl status``) needs of the runtime's DHT port
    (``meshcomm.runtime.dht_opendht.OpenDhtPort``)."""

    def submit(self, op: DhtOp) -> None: ...

    def bound_port(self) -> int: ...

    @property
    def counters(self) -> Mapping[DhtPortCounter, int]: ...


def as_uplink_radio(radio: Radio | None) -> UplinkRadio | None:
    """``radio`` if it is an UplinkRadio (under its impairment wrapper, if any), or None."""
    if isinstance(radio, ImpairedRadio):
        radio = radio.inner
    return radio if isinstance(radio, UplinkRadio) else None


#: Journal records held for appending after the transmit (see ``record`` above); more in
#: one loop turn are appended at once (the journal's own buffer bounds then apply).
MAX_DEFERRED_RECORDS = 256
#: A failing store-and-forward write is logged at most this often (the rest counted).
PERSIST_ERROR_LOG_INTERVAL_S = 10.0


class NodeDriver:
    """Drives one node core on an asyncio loop. Not thread-safe; use on the loop only."""

    def __init__(self, core: NodeCore | MeshNode, radios: Sequence[Radio],
                 journal: JournalStore | None, loop: asyncio.AbstractEventLoop, *,
                 wall_offset_s: float, event_sink: EventSink | None = None,
                 sip_sink: SipSink | None = None, node_on_uplink: bool = False) -> None:
        names = [radio.name for radio in radios]
        if len(set(names)) != len(names):
            raise LocalProtocolError(f"radio names must be unique: {names}")
        #: The whole node (a bare MeshNode is driven as a node without gateway).
        self.core = core if isinstance(core, NodeCore) else NodeCore(core)
        self.node = self.core.node
        self.sip_sink = sip_sink
        #: The gateway's sockets (for status), set by run_node.
        self.sip_sockets: SipSockets | None = None
        #: The call ports of the gateway's media relay, set by run_node.
        self.media_ports: UdpMediaPorts | None = None
        #: The store-and-forward database, set by run_node (SfPersist batches go there).
        self.sf_storage: SfStorage | None = None
        #: The freshness database, set by run_node (the memory's changes go there).
        self.fresh_store: FreshnessStore | None = None
        #: The DHT node on the uplink (the bridge's operations go there), set by run_node.
        self.dht_port: DhtPortLike | None = None
        self._journal = journal
        #: Records (and their loop time) not yet appended to the journal (see ``record``).
        self._records: list[tuple[JournalRecord, float]] = []
        self.loop = loop
        self.wall_offset_s = wall_offset_s
        self.event_sink = event_sink
        self.radios: dict[str, Radio] = {radio.name: radio for radio in radios}
        #: Where dst None goes: the island's radios (and the uplink's if the node is an
        #: uplink-mesh node itself).
        self._broadcast_radios = [radio for radio in radios
                                  if node_on_uplink or radio.name != UPLINK_RADIO]
        #: The uplink transport (UplinkPeers events add peers to it), or None.
        self.uplink_radio = as_uplink_radio(self.radios.get(UPLINK_RADIO))
        self.started_at = loop.time()
        #: Every counter of the driver is reported from the start (0 until it happens).
        self.counters: dict[str, int] = dict.fromkeys(DRIVER_COUNTERS, 0)
        #: Failures of one step, contained (see the module docstring).
        self.faults = Containment(self.counters, clock=loop.time, journal=self._journal_now)
        self.pump_ = Pump(self.core, self, self.faults, arm_later=self._arm_later)
        self._timer = OneTimer(loop, self._on_timer)
        self._arm_pending = False
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
        journal = self.journal      # every pending record appended, then written by close
        self._closed = True
        self._arm_pending = False
        self._timer.cancel()
        for radio in self.radios.values():
            radio.close()
        if journal is not None:
            journal.close()

    def close_media(self) -> None:
        """End every call's media (the relay's sessions) and close every call port."""
        relay = self.core.relay
        if relay is not None and not self._closed:
            now = self.now()
            for call_id in list(relay.sessions):
                relay.end_call(call_id, now)
            self.pump()
        if self.media_ports is not None:
            self.media_ports.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def armed_at(self) -> float | None:
        """Loop time the one timer is armed for (None: no timer); an arm still due is
        done first."""
        if self._arm_pending:
            self._arm_due()
        return self._timer.armed_at

    def now(self) -> float:
        return self.loop.time()

    def wall_time(self, now: float) -> float:
        return now + self.wall_offset_s

    # ------------------------------------------------------------ inputs
    def receive(self, radio_name: str, data: bytes, src: str) -> None:
        if not self._closed:
            self.pump_.radio(data, LinkAddr(f"{radio_name}{LINK_ADDR_SEPARATOR}{src}"),
                             self.now())

    def receive_sip(self, data: bytes, src: Address) -> None:
        """A SIP message from a local client (UDP datagram or framed TCP message)."""
        if not self._closed and self.core.gateway is not None:
            self.pump_.sip(data, src, self.now())

    def sip_client_registered(self, src: Address) -> bool:
        """Whether a live local registration's REGISTER came from ``src`` (the SIP
        sockets keep such a TCP connection open past its idle timeout)."""
        gateway = self.core.gateway
        return not self._closed and gateway is not None and gateway.registrar.is_client(src)

    def receive_sip_batch(self, batch: Sequence[tuple[bytes, Address]]) -> None:
        """Datagrams read from the SIP socket in one go (sipgw drains it in batches so
        the kernel queue does not overflow under a flood): one pump for the batch."""
        if not self._closed and self.core.gateway is not None:
            self.pump_.sip_batch(list(batch), self.now())

    def receive_client_media(self, call_id: str, index: int, channel: Channel,
                             data: bytes) -> None:
        """A datagram from a client on one of a call's ports (UdpMediaPorts' sink)."""
        if not self._closed and self.core.relay is not None:
            self.pump_.client_media(call_id, index, channel, data, self.now())

    def _on_timer(self) -> None:
        if not self._closed:
            self.pump_.timer(self.now())

    # ------------------------------------------------------------ commands
    def register(self, aor: str, contacts: tuple[str, ...]) -> Binding:
        now = self.now()
        return self.pump_.command(now, lambda: self.core.register(aor, contacts, now))

    def deregister(self, aor: str) -> Binding | None:
        now = self.now()
        return self.pump_.command(now, lambda: self.core.deregister(aor, now))

    def shutdown(self) -> None:
        """Withdraw the node's registrations (tombstones go out now) and stop refreshing."""
        now = self.now()
        self.pump_.command(now, lambda: self.core.shutdown(now))

    def send_message(self, to_aor: str, text: str) -> int:
        """Send a MESSAGE from the node's AoR through the gateway's built-in UA."""
        now = self.now()
        return self.pump_.command(now, lambda: self.core.send_message(to_aor, text, now))

    def hold_pending_messages(self) -> int:
        """Stopping: hand the gateway's MESSAGEs still waiting for a far node to
        store-and-forward and persist them now (each is answered 202 once on disk, 500 if
        the write fails). Returns how many were handed over."""
        if self._closed:
            return 0
        now = self.now()
        handed = self.pump_.command(now, lambda: self.core.hold_pending(now))
        if handed:
            log.info("stopping: %d pending MESSAGE(s) handed to store-and-forward", handed)
        return handed

    def who(self) -> list[WhoEntry]:
        return self.node.overlay.who(self.now())

    def pump(self) -> None:
        """Run the pump now (after a command given to the core directly)."""
        if not self._closed:
            self.pump_.run(self.now())

    # ------------------------------------------------------------ the Edge
    def transmit(self, dgram: Datagram) -> None:
        if dgram.dst is None:
            for radio in self._broadcast_radios:
                self._send(radio, dgram.data, None)
            return
        name, sep, addr = dgram.dst.partition(LINK_ADDR_SEPARATOR)
        target = self.radios.get(name)
        if not sep or target is None:
            self.counters[R.TX_UNKNOWN_RADIO] += 1
            log.debug("datagram for unknown link address %r dropped", dgram.dst)
            return
        self._send(target, dgram.data, addr or None)

    def store(self, batch: list[SfPersist]) -> bool:
        """Apply a batch in one transaction; False if the write failed (counted, logged
        at most every PERSIST_ERROR_LOG_INTERVAL_S)."""
        if self.sf_storage is None:
            log.debug("store-and-forward without storage (memory only): %d event(s)",
                      len(batch))
            return True
        try:
            self.sf_storage.apply_all(batch)
        except sqlite3.Error as exc:
            self.counters[R.SF_PERSIST_ERRORS] += 1
            now = self.now()
            if now - self._persist_error_logged_at >= PERSIST_ERROR_LOG_INTERVAL_S:
                self._persist_error_logged_at = now
                log.error("store-and-forward %s: write failed (%d so far): %s",
                          self.sf_storage.path, self.counters[R.SF_PERSIST_ERRORS], exc)
            return False
        return True

    def store_freshness(self, updates: FreshnessUpdates) -> bool:
        """Write the freshness memory's changes; False (kept for the next pump) on failure
        (counted, logged at most every PERSIST_ERROR_LOG_INTERVAL_S)."""
        if self.fresh_store is None:
            return True
        try:
            self.fresh_store.apply(updates)
        except sqlite3.Error as exc:
            self.counters[R.FRESHNESS_PERSIST_ERRORS] += 1
            now = self.now()
            if now - self._fresh_error_logged_at >= PERSIST_ERROR_LOG_INTERVAL_S:
                self._fresh_error_logged_at = now
                log.error("freshness %s: write failed (%d so far): %s", self.fresh_store.path,
                          self.counters[R.FRESHNESS_PERSIST_ERRORS], exc)
            return False
        return True

    def record(self, record: JournalRecord) -> None:
        self._journal_now(record, self.now())

    def to_client(self, dgram: LocalDatagram) -> None:
        if self.sip_sink is not None:
            self.sip_sink(dgram)

    def to_client_media(self, packet: ClientPacket) -> None:
        if self.media_ports is not None:
            self.media_ports.send(packet)

    def dht(self, op: DhtOp) -> None:
        if self.dht_port is None:
            self.counters[R.DHT_OPS_WITHOUT_PORT] += 1
            log.debug("DHT operation without a DHT port: %r", op)
            return
        self.dht_port.submit(op)

    def receive_dht(self, result: DhtResult) -> None:
        """A result of the DHT port (on the loop): to the node's bridge."""
        if not self._closed and self.core.dht is not None:
            self.pump_.dht_result(result, self.now())

    def other(self, event: object) -> None:
        if isinstance(event, MediaCallEnded):
            log.info("media of call %s ended (%s)", event.call_id, event.reason.value)
        elif isinstance(event, UplinkPeers) and self.uplink_radio is not None:
            new = self.uplink_radio.add_peers(event.addrs)
            if new:
                log.debug("uplink: %d new peer(s) from the DHT", new)
        if self.event_sink is not None:
            self.event_sink(event)
        else:
            log.debug("event without a consumer: %r", event)

    def arm(self, deadline: float | None) -> None:
        self._timer.arm(deadline)

    def _arm_later(self) -> None:
        """After a run: the timer is re-armed once at the start of the next loop turn, for
        every run of this turn (a batch of datagrams costs one ``next_timer()``, asked
        after they went out). Until then the old timer stands: at worst it fires early
        (the parts check what is due) or one loop turn late."""
        if not self._arm_pending:
            self._arm_pending = True
            self.loop.call_soon(self._arm_due)

    def _arm_due(self) -> None:
        if self._arm_pending and not self._closed:
            self._arm_pending = False
            self.pump_.arm(self.now())

    # ------------------------------------------------------------ IO helpers
    def _send(self, radio: Radio, data: bytes, dst: str | None) -> None:
        try:
            radio.send(data, dst)
        except LocalProtocolError as exc:
            # Oversize for this link or a malformed address: a bug above, not fatal.
            self.counters[R.TX_ERRORS] += 1
            log.warning("radio %s: %s", radio.name, exc)

    @property
    def journal(self) -> JournalStore | None:
        """The node's journal, every record produced so far appended (none pending)."""
        if self._records and not self._closed:
            self._append_records()
        return self._journal

    def _journal_now(self, record: JournalRecord, now: float) -> None:
        if self._journal is None or self._closed:
            log.debug("journal: %s %s", record.type.value, dict(record.data))
            return
        self._records.append((record, now))
        if len(self._records) >= MAX_DEFERRED_RECORDS:
            self._append_records()
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _append_records(self) -> None:
        journal, records, self._records = self._journal, self._records, []
        assert journal is not None
        for record, now in records:
            try:
                journal.append_record(record, now, self.wall_time(now))
            except LocalProtocolError:
                # A value from outside the data model (a peer's number): stored as text.
                self.counters[R.JOURNAL_RECORDS_NORMALISED] += 1
                journal.append_record(JournalRecord(record.type, storable_data(record.data)),
                                      now, self.wall_time(now))

    def _flush(self) -> None:
        self._flush_pending = False
        if self._journal is None or self._closed:
            return
        journal = self.journal
        assert journal is not None
        try:
            journal.flush_due()
        except sqlite3.Error:
            # Entries stay buffered (bounded) and are retried; the store logs the failure
            # rate-limited and reports it in status(), so nothing is logged per flush here.
            self.counters[R.JOURNAL_FLUSH_ERRORS] += 1

    def flush_journal(self) -> int:
        """Flush now; return the durable seq (0 without a journal)."""
        journal = self.journal
        if journal is None:
            return 0
        self._flush()
        return journal.durable_seq
