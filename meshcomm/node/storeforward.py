"""Store-and-forward of SIP MESSAGEs for absent responders (sans-IO core).

The gateway hands a MESSAGE it could not deliver to :meth:`StoreForward.hold`. The node
then

* keeps it (state ``queued``) and offers custody to relays (neighbours whose HELLO says
  ``relay``, and nodes whose binding carries the capability :data:`RELAY_CAP`) with a
  parcel signed by this node, sealed to the destination node (``e2e``, issue 12: a parcel
  still in clear leaves no node and relays refuse one); a relay that takes it answers
  ``ACCEPT`` and the status becomes ``held_by`` that relay;
* polls the location table: when a usable binding of the To AoR (re)appears, every holder
  sends the parcel to the bound node (``DELIVER``), retrying with backoff;
* with :attr:`StoreForward.remote_delivery` (a node that can reach other islands, issue
  10), a message whose To AoR has no binding in the island is tried beyond it: the holder
  resolves the AoR across sites and sends the sealed parcel through the tunnel
  (:mod:`meshcomm.node.sf_remote`, which also covers the origin's parcels in clear);
* the destination node checks the origin's signature, hands the MESSAGE to its gateway
  (:class:`SfDeliver`), remembers the id as delivered (persisted: exactly once, whatever
  the number of holders) and answers every holder with a receipt it signs; holders accept
  a receipt only if its signer holds a usable binding of the To AoR (or, beyond the
  island, a resolution named it), then drop their copy;
  the origin's status becomes ``delivered``.

Persistence is out of the core: it emits :class:`SfPersist` events that the runtime applies
to :class:`meshcomm.node.storage.SfStorage`; on restart the loaded state comes back in
through the constructor. The wire format is in :mod:`meshcomm.node.storeforward_wire`.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from meshcomm.errors import ConfigError, DecodeError, LocalProtocolError
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import (
    EnvelopeDropped,
    JournalPayload,
    NeighbourUp,
    RouteChanged,
    SfCustody,
    SfDelivered,
    SfHeld,
    SfReceipt,
)
from meshcomm.node.e2e_sip import SipSealing
from meshcomm.node.gateway.types import HoldRefused, ResolveAor
from meshcomm.node.kinds import AppKind
from meshcomm.node.mesh import MeshNode
from meshcomm.node.sf_counters import (
    CUSTODY_REFUSAL_COUNTERS,
    SF_DROP_COUNTERS,
    CustodyRefusal,
    SfCounter,
    SfDropReason,
)
from meshcomm.node.sf_delivered import DeliveredLog, DeliveredRecord
from meshcomm.node.sf_probe import ReachProbes
from meshcomm.node.sf_remote import REMOTE_HOLDER, RemoteDelivery, SfRemoteTry
from meshcomm.node.sf_types import (
    TRANSITIONS,
    HeldMessage,
    HeldState,
    HeldStatus,
    PersistOp,
    SfDeliver,
    SfHoldResult,
    SfInput,
    SfPersist,
)
from meshcomm.node.storeforward_wire import (
    MAX_MSG_ID_BYTES,
    MAX_SIP_BYTES,
    MIN_MSG_ID_BYTES,
    Parcel,
    SfMessage,
    SfMsgType,
    check_aor,
    decode_message_untrusted,
    decode_parcel_untrusted,
    decode_receipt_untrusted,
    encode_message,
    journal_ids,
    make_parcel,
    make_receipt,
    parcel_signature_ok,
    receipt_signature_ok,
)
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.overlay.ratelimit import JournalGate
from meshcomm.types import NodeId
from meshcomm.wire import limits

log = logging.getLogger(__name__)

__all__ = ["TRANSITIONS", "HeldMessage", "HeldState", "HeldStatus", "HoldRefused",
           "PersistOp", "SfDeliver", "SfEvent", "SfHoldResult", "SfInput", "SfPersist",
           "StoreForward", "StoreForwardConfig"]

#: Binding capability by which a relay beyond one hop advertises that it holds messages.
RELAY_CAP = "relay"
RELAY_ROLE = "relay"
#: Length of the node name used as a holder label (same as ``<nodehex>.mesh`` in SIP).
NODE_LABEL_BYTES = 8
#: A drop of the same (reason, source) is journaled at most this often; the rest counted.
DROP_JOURNAL_INTERVAL_S = 1.0
MAX_DROP_JOURNAL_KEYS = 256
#: How often old delivered ids are forgotten.
PRUNE_INTERVAL_S = 60.0
#: Deliveries handed to the gateway and not yet answered (more are refused until then).
MAX_PENDING_LOCAL = 256


@dataclass(frozen=True, slots=True)
class StoreForwardConfig:
    #: Custody copies a relay holds for others (the ``[relay]`` profile section).
    max_held_messages: int = 1000
    #: Messages of this node's own clients held at once (oldest evicted beyond).
    max_own_messages: int = 200
    #: A message older than this (from its creation at the origin) is dropped.
    max_age_s: float = 86400.0
    #: How often held messages look for their destination's binding.
    poll_interval_s: float = 1.0
    #: Delivery attempts to a bound node: first retry after this, doubling up to the max.
    retry_initial_s: float = 2.0
    retry_max_s: float = 30.0
    #: Custody offers to relays not yet holding the message are repeated this often.
    offer_interval_s: float = 5.0
    #: Relays asked to hold each message.
    max_custody_relays: int = 2
    #: The gateway must answer an SfDeliver within this time, else it may come again.
    local_delivery_timeout_s: float = 30.0
    #: Delivered ids remembered (exactly once) this long and at most this many.
    delivered_keep_s: float = 2 * 86400.0
    max_delivered_ids: int = 100_000
    #: A node answering a probe after silence gets its held messages at once, but a
    #: message is not tried again sooner than this after its last attempt.
    heal_retry_gap_s: float = 0.5
    #: While messages wait out their backoff for a node, it is probed this often (a heal
    #: far away is noticed within this and a round trip; see sf_probe).
    probe_interval_s: float = 1.0

    def validate(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for name in ("max_age_s", "poll_interval_s", "retry_initial_s", "offer_interval_s",
                     "local_delivery_timeout_s", "delivered_keep_s", "heal_retry_gap_s",
                     "probe_interval_s"):
            if not getattr(self, name) > 0:
                problems.append((name, "must be > 0"))
        if self.retry_max_s < self.retry_initial_s:
            problems.append(("retry_max_s", "must be >= retry_initial_s"))
        for name in ("max_held_messages", "max_custody_relays", "max_delivered_ids"):
            if getattr(self, name) < 0:
                problems.append((name, "must be >= 0"))
        if self.max_own_messages < 1:
            problems.append(("max_own_messages", "must be >= 1"))
        return problems


SfEvent = SfDeliver | SfPersist | SfHoldResult | SfRemoteTry | ResolveAor | JournalRecord


@dataclass(slots=True)
class _Entry:
    held: HeldMessage
    next_try: float
    backoff_s: float
    bindings_seen: tuple[tuple[bytes, int], ...] = ()
    next_offer: float = 0.0
    offered: set[NodeId] = field(default_factory=set)
    accepted: set[NodeId] = field(default_factory=set)
    #: Nodes bound to the To AoR at the last look, and when a DELIVER last went out.
    bound_nodes: frozenset[NodeId] = frozenset()
    last_try: float = float("-inf")
    #: Nodes beyond the island the parcel was sent to (see sf_remote).
    far_nodes: tuple[NodeId, ...] = ()


@dataclass(slots=True)
class _PendingLocal:
    parcel: Parcel
    requesters: set[NodeId]
    deadline: float


def _active(entry: _Entry) -> bool:
    """Still to be delivered (not delivered, not expired)."""
    return entry.held.state in (HeldState.QUEUED, HeldState.HELD_BY)


class StoreForward(RemoteDelivery):
    """Store-and-forward of one node. Commands queue work; drain :meth:`next_event`, and
    the node's ``to_send`` (protocol messages go out through ``node.send_unicast``)."""

    def __init__(self, node: MeshNode, config: StoreForwardConfig, *, now: float,
                 restored: Iterable[HeldMessage] = (),
                 delivered_ids: Iterable[bytes | DeliveredRecord] = ()) -> None:
        for key, problem in config.validate():
            raise ConfigError(f"store_forward.{key}", problem)
        self.node = node
        self.config = config
        #: Seals held MESSAGEs to the To AoR's node and opens those delivered here (the
        #: node core sets it; None: held and delivered as given).
        self.e2e: SipSealing | None = None
        self.counters: Counter[str] = Counter()
        self._events: deque[SfEvent] = deque()
        self._entries: dict[bytes, _Entry] = {}
        self._pending: dict[bytes, _PendingLocal] = {}
        #: Own holds whose STORE is not yet known to be on disk (see :meth:`persisted`).
        self._unconfirmed: set[bytes] = set()
        self._drop_journal = JournalGate(DROP_JOURNAL_INTERVAL_S, MAX_DROP_JOURNAL_KEYS)
        self._tick_at = now
        self._prune_at = now + PRUNE_INTERVAL_S
        RemoteDelivery.__init__(self)
        self._handlers: dict[SfMsgType, Callable[[SfMessage, UnicastReceived, float], None]] = {
            SfMsgType.OFFER: self._on_offer,
            SfMsgType.ACCEPT: self._on_accept,
            SfMsgType.DELIVER: self._on_deliver,
            SfMsgType.RECEIPT: self._on_receipt,
            SfMsgType.PROBE: self._on_probe,
            SfMsgType.PROBE_ACK: self._on_probe_ack,
        }
        self._probes = ReachProbes(config.probe_interval_s)
        wall = self._wall(now)
        self._delivered = DeliveredLog(config.max_delivered_ids, config.delivered_keep_s, (
            r if isinstance(r, DeliveredRecord) else DeliveredRecord(bytes(r), wall)
            for r in delivered_ids))
        for held in restored:
            self._restore(held, now)

    def _restore(self, held: HeldMessage, now: float) -> None:
        if held.parcel.incident != self.node.settings.incident:
            self.counters[SfCounter.RESTORE_WRONG_INCIDENT] += 1
            return
        self._entries[held.msg_id] = _Entry(held, now, self.config.retry_initial_s,
                                            next_offer=now)
        self.counters[SfCounter.RESTORED] += 1

    # ------------------------------------------------------------ properties
    @property
    def is_relay(self) -> bool:
        return self.node.settings.role == RELAY_ROLE

    def _wall(self, now: float) -> float:
        return self.node.overlay.wall_time(now)

    def _label(self, node_id: bytes) -> str:
        """A node as a person reads it: an AoR it is bound to, else its short hex."""
        for stored in self.node.table:
            b = stored.binding
            if b.node_id == node_id and not b.is_tombstone:
                return str(b.aor)
        return node_id[:NODE_LABEL_BYTES].hex()

    # ------------------------------------------------------------ commands
    def hold(self, *, msg_id: bytes, from_aor: str, to_aor: str, sip: bytes,
             now: float) -> bool:
        """Keep a MESSAGE of a local client for ``to_aor`` until it can be delivered.

        Returns True when the message is already durably held (or was delivered here);
        False when its write is queued (an ``SfPersist``): an :class:`SfHoldResult` follows
        once the runtime reports the write through :meth:`persisted`. Only a durable hold
        may be answered 202. Idempotent per ``msg_id`` (8..32 bytes, unique). Raises
        LocalProtocolError for arguments out of bounds, HoldRefused when the own store is
        full of undelivered messages."""
        if not MIN_MSG_ID_BYTES <= len(msg_id) <= MAX_MSG_ID_BYTES:
            raise LocalProtocolError(f"msg_id must be {MIN_MSG_ID_BYTES}.."
                                     f"{MAX_MSG_ID_BYTES} bytes")
        if len(sip) > MAX_SIP_BYTES:
            raise LocalProtocolError(f"MESSAGE over {MAX_SIP_BYTES} bytes cannot be held")
        try:
            check_aor(from_aor, "from_aor")
            check_aor(to_aor, "to_aor")
        except DecodeError as exc:
            raise LocalProtocolError(str(exc)) from None
        if msg_id in self._delivered:
            return True
        if msg_id in self._entries:
            return msg_id not in self._unconfirmed
        self._evict_own_if_full()
        if self.e2e is not None:
            sip = self.e2e.seal_for_aor(to_aor, sip, now)
        parcel = make_parcel(self.node.identity, incident=self.node.settings.incident,
                             msg_id=msg_id, from_aor=from_aor, to_aor=to_aor,
                             created_wall_s=self._wall(now), sip=sip)
        held = HeldMessage(parcel, True, HeldState.QUEUED, self._label(self.node.node_id))
        entry = _Entry(held, now, self.config.retry_initial_s, next_offer=now)
        self._entries[msg_id] = entry
        self._unconfirmed.add(msg_id)
        self.counters[SfCounter.HELD_OWN] += 1
        self._persist(SfPersist(PersistOp.STORE, msg_id, held))
        self._journal(SfHeld(**journal_ids(parcel), state=HeldState.QUEUED.value))
        log.info("holding message %s for %s", msg_id.hex(), to_aor)
        self._service(entry, now)
        return False

    def _evict_own_if_full(self) -> None:
        """Keep at most max_own_messages own entries: a finished one (delivered, expired)
        makes room; an undelivered one was answered 202 and is never dropped for a newer
        one, so a full store refuses (HoldRefused: the client is told to retry)."""
        own = [e for e in self._entries.values() if e.held.own]
        if len(own) < self.config.max_own_messages:
            return
        done = [e for e in own if not _active(e)]
        if not done:
            self.counters[SfCounter.REFUSED_FULL] += 1
            raise HoldRefused(f"store-and-forward holds {len(own)} undelivered messages "
                              "(max_own_messages)")
        self._forget(min(done, key=lambda e: e.held.parcel.created_wall_s))

    def persisted(self, msg_ids: Iterable[bytes], ok: bool, now: float) -> None:
        """The runtime applied (``ok``) or failed to apply the ``SfPersist`` events of
        these ids. A hold whose write failed is dropped (the gateway answers 500 and the
        client sends again), counted and journaled; every other change stays in memory."""
        if not ok:
            self.counters[SfCounter.PERSIST_FAILED] += 1
        for msg_id in msg_ids:
            if msg_id not in self._unconfirmed:
                continue
            self._unconfirmed.discard(msg_id)
            if ok:
                self._events.append(SfHoldResult(msg_id, True))
                continue
            entry = self._entries.pop(msg_id, None)
            self.counters[SfCounter.HOLD_NOT_DURABLE] += 1
            if entry is not None:
                self._journal(SfHeld(**journal_ids(entry.held.parcel), state="not_held",
                                     reason="storage_error"))
            log.warning("message %s not held: the store-and-forward write failed",
                        msg_id.hex())
            self._events.append(SfHoldResult(msg_id, False))

    def route_up(self, dst: bytes, now: float) -> None:
        """Node ``dst`` answered a probe after silence (the mesh reaches it again): held
        messages for it are tried at once (backoff reset), but not within
        heal_retry_gap_s of their last attempt."""
        for entry in self._entries.values():
            if not _active(entry) or dst not in entry.bound_nodes:
                continue
            due = max(now, entry.last_try + self.config.heal_retry_gap_s)
            if due >= entry.next_try:
                continue
            entry.next_try = due
            entry.backoff_s = self.config.retry_initial_s
            self._tick_at = min(self._tick_at, due)
            self.counters[SfCounter.HEAL_RETRIES] += 1

    def on_overlay_record(self, record: JournalRecord, now: float) -> None:
        """Watch the overlay's journal records for a returning node (NEIGHBOUR_UP, and
        ROUTE_CHANGED with a next hop): a node that held messages wait for is probed at
        once; its answer, not the record (which others can provoke), retries them."""
        payload = record.payload
        if isinstance(payload, NeighbourUp):
            node_hex = payload.neighbour
        elif isinstance(payload, RouteChanged) and payload.next_hop:
            node_hex = payload.dst
        else:
            return
        try:
            node_id = bytes.fromhex(node_hex)
        except ValueError:
            node_id = None
        nonce = self._probes.urgent(NodeId(node_id), now) if node_id else None
        if node_id and nonce is not None:
            self.counters[SfCounter.PROBES_URGENT] += 1
            self._send(NodeId(node_id), encode_message(SfMsgType.PROBE, nonce), now)

    def local_delivery_done(self, msg_id: bytes, ok: bool, now: float) -> None:
        """The gateway's answer to :class:`SfDeliver`: delivered (``ok``) or not."""
        pending = self._pending.pop(msg_id, None)
        if pending is None:
            self.counters[SfCounter.LOCAL_DONE_UNKNOWN] += 1
            return
        if not ok:
            self.counters[SfCounter.LOCAL_DELIVERY_FAILED] += 1
            return
        self.counters[SfCounter.DELIVERED_LOCAL] += 1
        self._journal(SfDelivered(**journal_ids(pending.parcel),
                                  requesters=tuple(n.hex() for n in sorted(pending.requesters))))
        wall = self._wall(now)
        self._remember(DeliveredRecord(msg_id, wall, pending.parcel.origin))
        self._send_receipts(pending.parcel, wall, pending.requesters, now)
        entry = self._entries.get(msg_id)
        if entry is not None:
            self._settle(entry, SfInput.RECEIPT, self._label(self.node.node_id))

    def outbox(self) -> list[HeldStatus]:
        """Messages of this node's clients: queued, held by a relay, delivered, expired."""
        own = [e.held.status() for e in self._entries.values() if e.held.own]
        return sorted(own, key=lambda s: (s.created, s.msg_id))

    def held_for_others(self) -> list[HeldStatus]:
        """Custody copies this relay holds for other nodes."""
        held = [e.held.status() for e in self._entries.values() if not e.held.own]
        return sorted(held, key=lambda s: (s.created, s.msg_id))

    def is_delivered(self, msg_id: bytes) -> bool:
        """True if this node delivered ``msg_id`` to its client (exactly-once set)."""
        return msg_id in self._delivered

    def note_delivered(self, msg_id: bytes, origin: bytes, now: float) -> None:
        """The gateway delivered ``msg_id`` (from node ``origin``, b"" for a local client)
        to a local client by another path than store-and-forward (directly over the
        mesh): remember it (persisted) so no holder's copy is delivered again."""
        if not MIN_MSG_ID_BYTES <= len(msg_id) <= MAX_MSG_ID_BYTES:
            raise LocalProtocolError("msg_id out of bounds")
        if msg_id in self._delivered:
            return
        self.counters[SfCounter.DELIVERED_DIRECT] += 1
        self._remember(DeliveredRecord(msg_id, self._wall(now), origin))

    @property
    def delivered_count(self) -> int:
        return len(self._delivered)

    def delivered_records(self) -> list[DeliveredRecord]:
        """The exactly-once log (for status and tests)."""
        return list(self._delivered)

    def _remember(self, record: DeliveredRecord) -> None:
        for old in self._delivered.add(record):
            self.counters[SfCounter.DELIVERED_EVICTED] += 1
            self._persist(SfPersist(PersistOp.FORGET, old))
        if record.msg_id in self._delivered:
            self._persist(SfPersist(PersistOp.DELIVERED, record.msg_id, wall_s=record.wall_s,
                                    origin=record.origin))

    # ------------------------------------------------------------ driving API
    def next_timer(self) -> float | None:
        if self._pending or any(_active(e) for e in self._entries.values()):
            return min(self._tick_at, self._prune_at)
        return self._prune_at if self._delivered or self._entries else None

    def on_timer(self, now: float) -> None:
        if now >= self._prune_at:
            self._prune_at = now + PRUNE_INTERVAL_S
            self._prune(now)
        if now < self._tick_at:
            return
        self._tick_at = now + self.config.poll_interval_s
        for msg_id, pending in list(self._pending.items()):
            if pending.deadline <= now:
                del self._pending[msg_id]
                self.counters[SfCounter.LOCAL_DELIVERY_TIMEOUT] += 1
        for entry in list(self._entries.values()):
            if _active(entry):
                self._service(entry, now)
        self._probe(now)
        probe_due = self._probes.next_due()
        if probe_due is not None:
            self._tick_at = max(now, min(self._tick_at, probe_due))
        self._wake_for_far(now)

    def next_event(self) -> SfEvent | None:
        return self._events.popleft() if self._events else None

    def on_mesh(self, event: UnicastReceived, now: float) -> None:
        """A mesh unicast of kind STORE_FORWARD reached this node."""
        if event.kind != AppKind.STORE_FORWARD:
            raise LocalProtocolError(f"unicast kind {event.kind} is not STORE_FORWARD")
        self.counters[SfCounter.RX] += 1
        try:
            msg = decode_message_untrusted(event.body)
            self._handlers[msg.type](msg, event, now)
        except DecodeError as exc:
            self._drop(SfDropReason.of(exc.reason), event.origin, now)

    # ------------------------------------------------------------ holders
    def _service(self, entry: _Entry, now: float) -> None:
        held = entry.held
        if self._wall(now) - held.parcel.created_wall_s > self.config.max_age_s:
            self.counters[SfCounter.EXPIRED] += 1
            self._journal(SfHeld(**journal_ids(held.parcel), state=HeldState.EXPIRED.value,
                                 reason="max_age", own=held.own))
            self._settle(entry, SfInput.EXPIRY, held.holder)
            return
        if not held.own and not self._carriable(held.parcel):
            # Custody in clear (restored from a store written before sealing): dropped;
            # its origin keeps its own copy.
            self.counters[SfCounter.CUSTODY_CLEAR_DROPPED] += 1
            self._forget(entry)
            return
        if held.own:
            self._seal_from_tables(entry, now)
            if now >= entry.next_offer:
                entry.next_offer = now + self.config.offer_interval_s
                self._offer(entry, now)
        bindings = self.node.table.lookup(held.parcel.to_aor)
        seen = tuple(sorted((s.binding.record_id, s.binding.seq) for s in bindings))
        if seen != entry.bindings_seen:
            entry.bindings_seen = seen
            entry.next_try = now
            entry.backoff_s = self.config.retry_initial_s
        entry.bound_nodes = frozenset(s.binding.node_id for s in bindings)
        if not bindings:
            if self.remote_delivery:
                self._try_remote(entry, now)
            return
        if now < entry.next_try:
            return
        entry.last_try = now
        entry.next_try = now + entry.backoff_s
        entry.backoff_s = min(entry.backoff_s * 2, self.config.retry_max_s)
        parcel = entry.held.parcel
        body = encode_message(SfMsgType.DELIVER, parcel.signed, parcel.signature)
        for dst in sorted({s.binding.node_id for s in bindings}):
            self.counters[SfCounter.DELIVERY_ATTEMPTS] += 1
            if dst == self.node.node_id:
                self._deliver_here(parcel, None, now)
            elif self._carriable(parcel):       # a clear parcel never leaves its origin
                self._send(dst, body, now)

    def _is_active(self, entry: _Entry) -> bool:
        return _active(entry)

    def _delivered_remotely(self, entry: _Entry, now: float) -> None:
        parcel = entry.held.parcel
        self._journal(SfReceipt(**journal_ids(parcel), dest=REMOTE_HOLDER, own=entry.held.own,
                                delivered_wall_s=self._wall(now)))
        self._settle(entry, SfInput.RECEIPT, REMOTE_HOLDER)

    def _probe(self, now: float) -> None:
        """Probe the nodes that held messages wait for (longer than a probe interval)."""
        horizon = now + self.config.probe_interval_s
        me = self.node.node_id
        wanted = {dst for e in self._entries.values()
                  if _active(e) and e.next_try > horizon for dst in e.bound_nodes if dst != me}
        for dst, nonce in self._probes.due(wanted, now):
            self.counters[SfCounter.PROBES_SENT] += 1
            self._send(dst, encode_message(SfMsgType.PROBE, nonce), now)

    def _on_probe(self, msg: SfMessage, event: UnicastReceived, now: float) -> None:
        self.counters[SfCounter.PROBES_ANSWERED] += 1
        self._send(event.origin, encode_message(SfMsgType.PROBE_ACK, msg.blob), now)

    def _on_probe_ack(self, msg: SfMessage, event: UnicastReceived, now: float) -> None:
        if self._probes.answered(event.origin, msg.blob):
            self.counters[SfCounter.PROBE_REACHABLE_AGAIN] += 1
            self.route_up(event.origin, now)

    def _relay_candidates(self) -> list[NodeId]:
        me = self.node.node_id
        found = {nb.node_id for nb in self.node.overlay.neighbours.by_id.values()
                 if nb.role == RELAY_ROLE}
        found.update(s.binding.node_id for s in self.node.table
                     if RELAY_CAP in s.binding.caps and not s.binding.is_tombstone)
        found.discard(me)
        return sorted(found)

    def _offer(self, entry: _Entry, now: float) -> None:
        wanted = self.config.max_custody_relays - len(entry.accepted)
        if wanted <= 0 or not self._carriable(entry.held.parcel):
            return
        candidates = [r for r in self._relay_candidates() if r not in entry.accepted]
        candidates.sort(key=lambda r: r in entry.offered)  # new relays first
        body = encode_message(SfMsgType.OFFER, entry.held.parcel.signed,
                              entry.held.parcel.signature)
        for relay in candidates[:wanted]:
            entry.offered.add(relay)
            self.counters[SfCounter.OFFERS_SENT] += 1
            self._send(relay, body, now)

    def _settle(self, entry: _Entry, what: SfInput, holder: str) -> None:
        """Apply a status input (TRANSITIONS) to a held message."""
        held = entry.held
        if not held.own:
            if what is SfInput.ACCEPTED:
                return
            self._forget(entry)
            return
        new_state = TRANSITIONS.get((held.state, what))
        if new_state is None:
            self.counters[SfCounter.STATUS_IGNORED] += 1
            return
        if new_state is held.state and holder == held.holder:
            return
        entry.held = replace(held, state=new_state, holder=holder)
        self._persist(SfPersist(PersistOp.STORE, held.msg_id, entry.held))
        log.info("message %s: %s %s", held.msg_id.hex(), new_state.value, holder)

    def _forget(self, entry: _Entry) -> None:
        msg_id = entry.held.msg_id
        if self._entries.pop(msg_id, None) is not None:
            self._persist(SfPersist(PersistOp.REMOVE, msg_id))

    # ------------------------------------------------------------ protocol input
    def _parcel(self, msg: SfMessage, sender: NodeId, now: float) -> Parcel | None:
        parcel = decode_parcel_untrusted(msg.blob, msg.signature)
        if parcel.incident != self.node.settings.incident:
            self._drop(SfDropReason.WRONG_INCIDENT, sender, now)
            return None
        if not parcel_signature_ok(parcel, self.node.overlay.verifier):
            self._drop(SfDropReason.FORGED_PARCEL, sender, now)
            return None
        return parcel

    def _on_offer(self, msg: SfMessage, event: UnicastReceived, now: float) -> None:
        parcel = self._parcel(msg, event.origin, now)
        if parcel is None:
            return
        if parcel.origin != event.origin:
            self._drop(SfDropReason.FORGED_OFFER, event.origin, now)
            return
        if self._bound_here(parcel.to_aor):
            self._deliver_here(parcel, event.origin, now)
            return
        if not self.is_relay:
            self.counters[SfCounter.OFFER_NOT_RELAY] += 1
            return
        if parcel.msg_id in self._entries:
            self._send(event.origin, encode_message(SfMsgType.ACCEPT, parcel.msg_id), now)
            return
        reason = self._custody_refusal(parcel, now)
        if reason is not None:
            self.counters[CUSTODY_REFUSAL_COUNTERS[reason]] += 1
            return
        held = HeldMessage(parcel, False, HeldState.QUEUED, self._label(self.node.node_id))
        entry = _Entry(held, now, self.config.retry_initial_s)
        self._entries[parcel.msg_id] = entry
        self.counters[SfCounter.CUSTODY_TAKEN] += 1
        self._persist(SfPersist(PersistOp.STORE, parcel.msg_id, held))
        self._journal(SfCustody(**journal_ids(parcel), taken=True, holder=self.node.node_id.hex()))
        self._send(event.origin, encode_message(SfMsgType.ACCEPT, parcel.msg_id), now)
        self._service(entry, now)

    def _custody_refusal(self, parcel: Parcel, now: float) -> CustodyRefusal | None:
        if not self._carriable(parcel):
            return CustodyRefusal.CLEAR
        wall = self._wall(now)
        if parcel.created_wall_s > wall + limits.MAX_FUTURE_SKEW_S:
            return CustodyRefusal.FUTURE_DATED
        if wall - parcel.created_wall_s > self.config.max_age_s:
            return CustodyRefusal.EXPIRED
        if parcel.msg_id in self._delivered:
            return CustodyRefusal.DELIVERED
        custody = sum(1 for e in self._entries.values() if not e.held.own)
        if custody >= self.config.max_held_messages:
            return CustodyRefusal.FULL
        return None

    def _on_accept(self, msg: SfMessage, event: UnicastReceived, now: float) -> None:
        entry = self._entries.get(msg.blob)
        if entry is None or not entry.held.own or event.origin not in entry.offered:
            self.counters[SfCounter.ACCEPT_UNSOLICITED] += 1
            return
        if event.origin not in entry.accepted:
            self._journal(SfCustody(**journal_ids(entry.held.parcel), taken=True,
                                    holder=event.origin.hex()))
        entry.accepted.add(event.origin)
        self.counters[SfCounter.CUSTODY_ACCEPTED] += 1
        if entry.held.state is HeldState.QUEUED:
            self._settle(entry, SfInput.ACCEPTED, self._label(event.origin))

    def _on_deliver(self, msg: SfMessage, event: UnicastReceived, now: float) -> None:
        parcel = self._parcel(msg, event.origin, now)
        if parcel is None:
            return
        if not self._bound_here(parcel.to_aor):
            self.counters[SfCounter.DELIVER_NOT_BOUND_HERE] += 1
            return
        self._deliver_here(parcel, event.origin, now)

    def _on_receipt(self, msg: SfMessage, event: UnicastReceived, now: float) -> None:
        receipt = decode_receipt_untrusted(msg.blob, msg.signature)
        entry = self._entries.get(receipt.msg_id)
        if entry is None or not _active(entry):
            self.counters[SfCounter.RECEIPT_UNKNOWN] += 1
            return
        parcel = entry.held.parcel
        if (receipt.incident != parcel.incident
                or receipt.to_aor.lower() != parcel.to_aor.lower()
                or not receipt_signature_ok(receipt, self.node.overlay.verifier)
                or not self._receipt_signer_ok(entry, receipt)):
            self._drop(SfDropReason.FORGED_RECEIPT, event.origin, now)
            return
        self.counters[SfCounter.RECEIPTS_ACCEPTED] += 1
        self._journal(SfReceipt(**journal_ids(parcel), dest=receipt.dest.hex(), own=entry.held.own,
                                delivered_wall_s=receipt.delivered_wall_s))
        if not entry.held.own and parcel.origin not in (event.origin, self.node.node_id):
            self._send(parcel.origin, encode_message(SfMsgType.RECEIPT, receipt.signed,
                                                     receipt.signature), now)
        self._settle(entry, SfInput.RECEIPT, self._label(receipt.dest))

    # ------------------------------------------------------------ destination
    def _bound_here(self, aor: str) -> bool:
        me = self.node.node_id
        return any(s.binding.node_id == me for s in self.node.table.lookup(aor))

    def _deliver_here(self, parcel: Parcel, requester: NodeId | None, now: float) -> None:
        """Deliver to the local client once; answer every requester with a receipt."""
        me = self.node.node_id
        wanted = {n for n in (requester, parcel.origin) if n is not None and n != me}
        msg_id = parcel.msg_id
        done = self._delivered.get(msg_id)
        if done is not None:
            self.counters[SfCounter.DUPLICATE_SUPPRESSED] += 1
            self._send_receipts(parcel, done.wall_s, wanted, now)
            return
        pending = self._pending.get(msg_id)
        if pending is not None:
            pending.requesters.update(wanted)
            return
        if len(self._pending) >= MAX_PENDING_LOCAL:
            self.counters[SfCounter.PENDING_LOCAL_FULL] += 1
            return
        sip = parcel.sip
        if self.e2e is not None:
            opened = self.e2e.open_parcel(sip, parcel.origin_key)
            if opened is None:          # sealed to another node (or forged): no receipt
                return
            sip = opened
        deadline = now + self.config.local_delivery_timeout_s
        self._pending[msg_id] = _PendingLocal(parcel, wanted, deadline)
        self._events.append(SfDeliver(msg_id, sip, parcel.to_aor, parcel.from_aor))

    def _send_receipts(self, parcel: Parcel, wall_s: float, dsts: set[NodeId],
                       now: float) -> None:
        """Sign a receipt of ``parcel`` delivered at ``wall_s`` and send it to ``dsts``."""
        if not dsts:
            return
        receipt = make_receipt(self.node.identity, incident=parcel.incident,
                               msg_id=parcel.msg_id, to_aor=parcel.to_aor,
                               delivered_wall_s=wall_s)
        body = encode_message(SfMsgType.RECEIPT, receipt.signed, receipt.signature)
        for dst in sorted(dsts):
            self._send(dst, body, now)

    def _prune(self, now: float) -> None:
        """Forget finished own entries past max_age_s, and old delivered ids."""
        wall = self._wall(now)
        for entry in list(self._entries.values()):
            if (not _active(entry)
                    and wall - entry.held.parcel.created_wall_s > self.config.max_age_s):
                self._forget(entry)
        for msg_id in self._delivered.prune(wall):
            self._persist(SfPersist(PersistOp.FORGET, msg_id))
        self._prune_far()

    # ------------------------------------------------------------ output helpers
    def _send(self, dst: NodeId, body: bytes, now: float) -> None:
        """To ``dst``: through the tunnel when it is in another island, else the mesh."""
        self.counters[SfCounter.TX] += 1
        if not self._send_far(dst, body, now):
            self.node.send_unicast(dst, AppKind.STORE_FORWARD, body, now)

    def _persist(self, event: SfPersist) -> None:
        self._events.append(event)

    def _store(self, entry: _Entry) -> None:
        self._persist(SfPersist(PersistOp.STORE, entry.held.msg_id, entry.held))

    def _journal(self, payload: JournalPayload) -> None:
        """A store-and-forward state change for the journal (ids as hex, no SIP body)."""
        self._events.append(JournalRecord.of(payload))

    def _drop(self, reason: SfDropReason, src: NodeId, now: float) -> None:
        """Count a refused protocol message and journal it (rate-limited per source)."""
        self.counters[SF_DROP_COUNTERS[reason]] += 1
        if not self._drop_journal.allow((reason, src.hex()), now):
            self.counters[SfCounter.DROP_JOURNAL_SUPPRESSED] += 1
            return
        self._journal(EnvelopeDropped(reason=reason.value, src=src.hex(), kind="store_forward"))
