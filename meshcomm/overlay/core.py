"""The gossip overlay core (sans-IO): one instance per node, driven through
``receive / to_send / next_timer / on_timer / next_event``.

Message handling is dispatched by an explicit table keyed by :class:`MsgType`. Anti-entropy
and unicast forwarding live in :mod:`.antientropy` and :mod:`.forwarding`, which see this
object through the :class:`~.context.OverlayContext` Protocol; this module holds
the shared state, HELLO beacons, controlled flooding and the timer wheel.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from meshcomm.errors import DecodeError
from meshcomm.journal.chain import checkpoint_message
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import (
    BindingConflict,
    BindingExpired,
    BindingLearned,
    BindingRejected,
    BindingUpdated,
    EnvelopeDropped,
    JournalPayload,
    JournalWitnessed,
    NeighbourDown,
    NeighbourUp,
    RouteChanged,
)
from meshcomm.location.binding import Binding, binding_from_envelope_untrusted
from meshcomm.location.table import (
    BindingState,
    LocationTable,
    MergeOutcome,
    MergeResult,
    TrustMode,
)
from meshcomm.overlay.acks import LinkKeys, OwedAcks
from meshcomm.overlay.admission import Admission
from meshcomm.overlay.antientropy import AntiEntropy
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.context import OverlayContext
from meshcomm.overlay.counters import (
    DROP_COUNTERS,
    TX_COUNTERS,
    DropReason,
    OverlayCounter,
    TxTag,
)
from meshcomm.overlay.departure import DepartureEchoes
from meshcomm.overlay.forwarding import Forwarder, UnicastReceived
from meshcomm.overlay.keydir import KeyDirectory
from meshcomm.overlay.media import MEDIA_MARKERS, MediaForwarder, MediaReceived
from meshcomm.overlay.neighbours import NeighbourTable
from meshcomm.overlay.ratelimit import JournalGate, TokenBucket, TokenBuckets, link_host
from meshcomm.overlay.routing import Route, RouteTable
from meshcomm.overlay.rtt import LinkRtt
from meshcomm.overlay.timers import TimerKind
from meshcomm.overlay.trickle import Beacon, Fired, TrickleCounter
from meshcomm.overlay.trustsync import TrustSync
from meshcomm.overlay.witness import (
    HEARD_COUNTERS,
    CheckpointBeacon,
    Heard,
    SignedCheckpoint,
    WitnessTable,
    decode_hello_untrusted,
    decode_sent_wall_untrusted,
    hello_interval_untrusted,
    hello_payload,
)
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import TrustStore
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import Datagram, LinkAddr, NodeId
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import (
    LINK_ACK_MARKER,
    ORIGIN_SHORT_LEN,
    Envelope,
    Hop,
    MsgType,
    WireFrame,
    decode_link_ack_untrusted,
    encode_frame,
    incident_tag,
    parse_frame_untrusted,
    seal,
    split_ack_ids,
)

OverlayEvent = JournalRecord | UnicastReceived | MediaReceived

#: Parses one datagram; raises only DecodeError. The simulator injects a memoising one
#: (parsing is a pure function, so sharing results across nodes changes no outcome); the
#: node then rebuilds the envelope with its incident and its key directory.
FrameDecoder = Callable[[bytes], tuple[WireFrame, Hop]]

#: Path metric given to a route learned without one (see learn_fallback_route).
FALLBACK_ROUTE_METRIC = 64 * 16
MAX_SILENT_TRACKED = 1024
#: Link cost assumed for a neighbour not yet heard in a HELLO (ETX 2, 1/16 units).
UNKNOWN_LINK_COST = 32

#: A drop of the same (reason, sending host) is journaled at most this often, and all
#: drops together within the config's journal_drops budget; the rest are only counted.
DROP_JOURNAL_INTERVAL_S = 1.0
MAX_DROP_JOURNAL_KEYS = 1024
#: Rebroadcasts waiting for their assessment delay, at most.
MAX_PENDING_FLOODS = 1024
#: HELLOs stay at Imin this long at most while a route waits on a silent neighbour,
#: and this long after a neighbour was lost (so a link that comes back is found again
#: as fast as with fixed HELLOs: the other side hears us, a new neighbour, and answers).
BROKEN_LINK_WATCH_S = 300.0
LOST_NEIGHBOUR_WATCH_S = 60.0
#: The first HELLO goes out within this fraction of the HELLO interval after start, and
#: two HELLOs are never closer than MIN_HELLO_GAP of it (the shortest jittered period of
#: the fixed beacons: Trickle resets cannot make HELLOs more frequent than before).
FIRST_HELLO_FRACTION = 0.1
MIN_HELLO_GAP = 0.75


@dataclass(slots=True)
class PendingFlood:
    envelope: Envelope
    hop: Hop
    src: LinkAddr | None
    received_at: float
    copies: int


@dataclass(frozen=True, slots=True)
class WhoEntry:
    aor: str
    node_id: str
    hops: int | None
    next_hop: str | None
    state: str
    expires_s: float
    contacts: tuple[str, ...]
    #: The signed hand-over time (wall clock) of a role address's claim, else None.
    handover_from: int | None = None


class GossipOverlay:
    """Neighbours, flooding, anti-entropy, routes and forwarding of one node."""

    def __init__(self, identity: Identity, incident: str, config: OverlayConfig,
                 table: LocationTable, verifier: SignatureVerifier, rng: random.Random, *,
                 now: float, role: str = "handset", seq_base: int = 0,
                 wall_offset_s: float = 0.0,
                 frame_decoder: FrameDecoder = parse_frame_untrusted,
                 trust: TrustStore | None = None) -> None:
        self.identity = identity
        self._decode_frame = frame_decoder
        self.node_id: NodeId = identity.node_id
        self.short_id = identity.node_id[:4]
        self.incident = incident
        self._incident_tag = incident_tag(incident)
        self._own_short = identity.node_id[:ORIGIN_SHORT_LEN]
        #: Keys of the origins this node verified, by short id (frames may elide them).
        self.keys = KeyDirectory()
        self.config = config
        self.table = table
        self.verifier = verifier
        self.rng = rng
        self.role = role
        self.wall_offset_s = wall_offset_s
        self._seq = seq_base
        self._hello_no = 0
        #: HELLO beacons: a Trickle timer (issue 13) or the fixed period (config.trickle)
        self.hello_timer = Beacon(config.hello_interval_s, rng, now, trickle=config.trickle,
                                  doublings=config.trickle_hello_doublings,
                                  jitter=config.hello_jitter,
                                  first_s=(0.0, config.hello_interval_s * FIRST_HELLO_FRACTION),
                                  min_gap_s=config.hello_interval_s * MIN_HELLO_GAP)
        max_interval = (self.hello_timer.trickle.imax_s if self.hello_timer.trickle is not None
                        else config.hello_interval_s)
        self.neighbours = NeighbourTable(config.hello_interval_s, config.neighbour_timeout_s,
                                         1.0 / max(1, config.link_window),
                                         max_interval_s=max_interval,
                                         min_quality=config.min_link_quality)
        self.routes = RouteTable(config.route_timeout_s)
        #: Round-trip time per link, for the per-hop retransmission timers.
        self.rtt = LinkRtt(window_s=config.rto_window_s)
        #: Per-hop acks owed to neighbours, and the link keys that authenticate them.
        self.acks = OwedAcks(self, LinkKeys(identity, incident))
        self.counters: Counter[str] = Counter()
        self._out: list[Datagram] = []
        self._events: deque[OverlayEvent] = deque()
        self._timers: list[tuple[float, int, TimerKind, bytes]] = []
        self._timer_no = 0
        self._seen: dict[bytes, bool] = {}
        self._pending_floods: dict[bytes, PendingFlood] = {}
        #: link addresses of neighbours that went silent (routes via them yield to others)
        self._silent: set[LinkAddr] = set()
        #: silent neighbours with suspended routes via them, since when (Trickle watch)
        self._broken_since: dict[LinkAddr, float] = {}
        self._lost_neighbour_at = -1e18
        self._limits = TokenBuckets(config.rate_limit_fps, config.rate_burst)
        self._drop_journal = JournalGate(DROP_JOURNAL_INTERVAL_S, MAX_DROP_JOURNAL_KEYS,
                                         TokenBucket(config.journal_drops_per_s,
                                                     config.journal_drops_burst, now))
        self.admission = Admission(config, self.neighbours.has_host)
        table.max_records = config.max_bindings
        table.protect_key(identity.public_key)
        table.reachable = self._reachable
        table.adjacent = lambda node: NodeId(node) in self.neighbours.by_id
        self.anti_entropy = AntiEntropy(self)
        self.forwarder = Forwarder(self)
        self.media = MediaForwarder(self)
        self.departures = DepartureEchoes(self)
        #: Revocations and agency-key additions (meshcomm.overlay.trustsync).
        self.trust = TrustSync(self, trust if trust is not None else TrustStore(
            incident, table.policy.agency_keys, verifier))
        #: Our journal checkpoint on HELLOs, and the neighbours' we journal (witnesses).
        self.beacon = CheckpointBeacon()
        self.witnesses = WitnessTable(now, config.witness_interval_s)
        self._handlers: dict[MsgType, Callable[[Envelope, Hop, LinkAddr, float], None]] = {
            MsgType.HELLO: self._on_hello,
            MsgType.BINDING: self._on_binding,
            MsgType.DIGEST: self.anti_entropy.on_digest,
            MsgType.SUMMARY: self.anti_entropy.on_summary,
            MsgType.PULL: self.anti_entropy.on_pull,
            MsgType.RECORDS: self.anti_entropy.on_records,
            MsgType.UNICAST: self.forwarder.on_unicast,
            MsgType.ACK: self.forwarder.on_ack,
            MsgType.TRUST: self.trust.on_trust,
            MsgType.TRUST_IDS: self.trust.on_ids,
            MsgType.TRUST_PULL: self.trust.on_pull,
        }
        self._timer_handlers: dict[TimerKind, Callable[[bytes, float], None]] = {
            TimerKind.HELLO: self._hello_due,
            TimerKind.DIGEST: self.anti_entropy.digest_due,
            TimerKind.REBROADCAST: self._rebroadcast_due,
            TimerKind.RETRANSMIT: self.forwarder.retransmit_due,
            TimerKind.HOUSEKEEPING: self._housekeeping_due,
            TimerKind.MEDIA_RETRANSMIT: self.media.retransmit_due,
            TimerKind.TOMBSTONE_RESEND: self.departures.resend_due,
            TimerKind.TRUST_REBROADCAST: self.trust.rebroadcast_due,
            TimerKind.TRUST_NOTICE: self.trust.notice_due,
            TimerKind.ACK_FLUSH: self.acks.flush_due,
        }
        self.schedule(self.hello_timer.next_at(), TimerKind.HELLO, self.hello_timer.timer_key())
        self.anti_entropy.start(now)
        self.schedule(now + config.hello_interval_s, TimerKind.HOUSEKEEPING)

    # ------------------------------------------------------------ driving API
    def receive(self, data: bytes, src: LinkAddr, now: float) -> None:
        self.counters[OverlayCounter.RX_FRAMES] += 1
        self.counters[OverlayCounter.RX_BYTES] += len(data)
        if len(data) > limits.MAX_DATAGRAM_BYTES:
            self.drop(DropReason.OVERSIZED, src, now)
            return
        if data[:1] in MEDIA_MARKERS:
            self.media.receive(data, src, now)
            return
        if not self._limits.allow(src, now):
            self.drop(DropReason.RATE_LIMITED, src, now)
            return
        if data[:1] == LINK_ACK_MARKER:
            self._on_link_ack(data, src, now)
            return
        try:
            frame, hop = self._decode_frame(data)
        except DecodeError as exc:
            self.drop(DropReason.of(exc.reason), src, now)
            return
        env = self._resolve(frame, src, now)
        # The acks a frame carries count unless it names an origin we cannot resolve: a
        # carrier dropped so must be sent again, with its key (meshcomm.overlay.acks).
        if hop.acks and (env is not None or frame.origin_key
                         or frame.short_origin == self._own_short) \
                and self.acks.authentic(hop.acks, hop.mac, src, now):
            self.forwarder.acked(split_ack_ids(hop.acks), src, now)
        if env is None:
            return
        if self.trust.active and self.trust.refuses_frame(env, src, now):
            self.drop(DropReason.REVOKED, src, now)
            return
        try:
            self._handlers[env.msg_type](env, hop, src, now)
        except DecodeError as exc:
            self.drop(DropReason.of(exc.reason), src, now)

    def _resolve(self, frame: WireFrame, src: LinkAddr, now: float) -> Envelope | None:
        """The envelope of a parsed frame, rebuilt with our incident name and the origin's
        key (carried, or held in the key directory); None if it is our own (an echo), of
        another incident, or names by short id an origin whose key we do not hold (not
        acknowledged: the sender's retransmission carries the key)."""
        if frame.tag != self._incident_tag:
            self.drop(DropReason.WRONG_INCIDENT, src, now)
            return None
        own_key = self.identity.public_key
        if frame.short_origin == self._own_short and frame.origin_key in (b"", own_key):
            self.counters[OverlayCounter.RX_OWN] += 1
            self.departures.on_own_copy(frame.resolve(self.incident, own_key), src)
            return None
        if frame.origin_key:
            return frame.resolve(self.incident, frame.origin_key)
        held = self.keys.entry(frame.short_origin)
        if held is None:
            self.drop(DropReason.AMBIGUOUS_ORIGIN if self.keys.ambiguous(frame.short_origin)
                      else DropReason.UNKNOWN_ORIGIN, src, now)
            return None
        return frame.resolve(self.incident, held[0], held[1])

    def _on_link_ack(self, data: bytes, src: LinkAddr, now: float) -> None:
        """A standalone per-hop ack (:mod:`.acks`): ack ids under the link's MAC."""
        try:
            ids, mac = decode_link_ack_untrusted(data)
        except DecodeError as exc:
            self.drop(DropReason.of(exc.reason), src, now)
            return
        if self.acks.authentic(ids, mac, src, now):
            self.forwarder.acked(split_ack_ids(ids), src, now)

    def to_send(self, now: float) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        first = self._timers[0][0] if self._timers else None
        expiry = self.table.next_expiry()
        if expiry is None:
            return first
        return expiry if first is None else min(first, expiry)

    def on_timer(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._timers)
            self._timer_handlers[kind](key, now)
        expiry = self.table.next_expiry()
        if expiry is not None and expiry <= now:
            for stored in self.table.expire(now):
                b = stored.binding
                self.emit(BindingExpired(aor=b.aor, node=b.node_id.hex(), seq=b.seq,
                                         tombstone=b.is_tombstone))

    def next_event(self) -> OverlayEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------ shared helpers
    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def wall_time(self, now: float) -> float:
        return now + self.wall_offset_s

    def schedule(self, when: float, kind: TimerKind, key: bytes = b"") -> None:
        self._timer_no += 1
        heapq.heappush(self._timers, (when, self._timer_no, kind, key))

    def emit(self, payload: JournalPayload) -> None:
        self._events.append(JournalRecord.of(payload))

    def post_event(self, event: UnicastReceived | MediaReceived) -> None:
        self._events.append(event)

    def queue_raw(self, dgram: Datagram, tag: TxTag) -> None:
        """Queue an encoded frame and count it by tag."""
        self._out.append(dgram)
        self.counters[OverlayCounter.TX_FRAMES] += 1
        self.counters[OverlayCounter.TX_BYTES] += len(dgram.data)
        self.counters[TX_COUNTERS[tag]] += 1

    def transmit(self, env: Envelope, hop: Hop, dst: LinkAddr | None, tag: TxTag) -> None:
        """Queue ``env`` with ``hop``; a frame to one neighbour carries the acks owed to
        it (:mod:`.acks`; a unicast only if the forwarder makes it their carrier)."""
        data = encode_frame(env, hop)
        if dst is not None and env.msg_type is not MsgType.UNICAST and self.acks.owes(dst):
            data = self.acks.attached(env, hop, dst, data)
        self.queue_raw(Datagram(data, dst), tag)

    def seal(self, msg_type: MsgType, payload: object) -> Envelope:
        return seal(self.identity, msg_type, self.incident, self.next_seq(), payload)

    def drop(self, reason: DropReason, src: LinkAddr | None, now: float) -> None:
        """Count a dropped input and journal it (rate-limited per reason and sending host,
        and globally: rotating source ports or addresses cannot grow the journal)."""
        self.counters[DROP_COUNTERS[reason]] += 1
        if not self._drop_journal.allow((reason, link_host(src) if src else ""), now):
            self.counters[OverlayCounter.DROP_JOURNAL_SUPPRESSED] += 1
            return
        self.emit(EnvelopeDropped(reason=reason.value, src=src or ""))

    def _reachable(self, node: bytes, now: float) -> bool:
        """Whether ``node`` is a neighbour or has a live route (table eviction asks)."""
        return (NodeId(node) in self.neighbours.by_id
                or self.routes.get(NodeId(node), now) is not None)

    def admission_refusal(self, binding: Binding, src: LinkAddr,
                          now: float) -> DropReason | None:
        """Why a received binding is refused before its signature is even checked (None if
        it may go on): under ``agency`` a binding without a credential; otherwise an
        identity new to the table while the sender's or the global budget is spent."""
        if binding.credential is None and self.table.policy.mode is TrustMode.AGENCY:
            return DropReason.NO_CREDENTIAL
        if (self.table.get(binding.record_id) is None
                and not self.admission.may_admit(link_host(src), now)):
            return DropReason.ADMISSION_LIMITED
        return None

    def seen(self, digest: bytes) -> bool | None:
        return self._seen.get(digest)

    def mark_seen(self, digest: bytes, ok: bool) -> None:
        if len(self._seen) >= self.config.seen_cache_entries:
            del self._seen[next(iter(self._seen))]
        self._seen[digest] = ok

    def verified(self, env: Envelope, src: LinkAddr, now: float) -> bool:
        """Check an envelope's signature (cached); a forgery is counted and journaled."""
        if env.verify(self.verifier):
            self.keys.learn(env.origin_key, env.origin)
            return True
        self.drop(DropReason.BAD_SIGNATURE, src, now)
        return False

    def next_hop_to(self, dst: NodeId, now: float) -> LinkAddr | None:
        """Link address to send to for ``dst``: the neighbour itself, else its route."""
        nb = self.neighbours.by_id.get(dst)
        if nb is not None:
            return nb.addr
        route = self.routes.get(dst, now)
        return route.next_hop if route is not None else None

    def lost_beyond(self, route: Route) -> bool:
        """Whether ``route``'s destination, two hops away, is no longer a neighbour of its
        next hop by the next hop's last HELLO (it would drop what we send there: a per-hop
        ack from it says nothing of the hop beyond). False when the route is longer, or
        the report says nothing (see Neighbour.reports)."""
        if route.hops != 2:
            return False
        nb = self.neighbours.get(route.next_hop)
        return nb is not None and nb.reports(route.dst[:4], limits.MAX_HELLO_NEIGHBOURS) is False

    def verified_first_copy(self, env: Envelope, src: LinkAddr, now: float) -> bool:
        """True for a new envelope whose signature checks out; counts duplicates."""
        digest = env.digest
        known = self._seen.get(digest)
        if known is not None:
            self.counters[OverlayCounter.RX_DUPLICATES] += 1
            pending = self._pending_floods.get(digest)
            if pending is not None:
                pending.copies += 1
            return False
        ok = env.verify(self.verifier)
        self.mark_seen(digest, ok)
        if ok:
            self.keys.learn(env.origin_key, env.origin)
        else:
            self.drop(DropReason.BAD_SIGNATURE, src, now)
        return ok

    def learn_route(self, env: Envelope, hop: Hop, src: LinkAddr, now: float,
                    via: NodeId | None = None) -> None:
        """Offer the path a frame from ``env.origin`` took to reach us via ``src``.

        ``via`` names the neighbour at ``src`` when the frame itself proves it (it signed
        the envelope that carried the record). A neighbour not yet heard in a HELLO gets
        an assumed link cost; its id is looked up again when the route is used."""
        nb = self.neighbours.get(src)
        if env.origin == self.node_id:
            return
        if nb is not None:
            via, cost = nb.node_id, self.neighbours.cost(src, now)
        else:
            via, cost = via or NodeId(b""), UNKNOWN_LINK_COST
        metric = hop.metric + cost
        hops = hop.hops + 1 if hop.hops >= 0 else -1
        # A neighbour we hear again is not silent (a HELLO timeout is no proof of death:
        # with quiet Trickle HELLOs, two lost in a row time it out while it still floods;
        # its route, just learned from this very frame, must not then yield to an offer
        # from a node that routes through us).
        self._silent.discard(src)
        current = self.routes.get(env.origin, now)
        if current is not None and current.next_hop in self._silent:
            self.routes.drop(env.origin)
        changed = self.routes.consider(env.origin, src, via, metric, hops, now, env.seq)
        if changed is not None:
            self.emit(RouteChanged(dst=env.origin.hex(), next_hop=via.hex() or src,
                                   hops=changed.hops, metric=metric))

    def learn_fallback_route(self, env: Envelope, src: LinkAddr, via: NodeId,
                             now: float) -> None:
        """A neighbour handed us a record of ``env.origin`` that was new to us, without
        knowing a path metric. It held the record before we did, and so did whoever gave
        it to it: following these pointers leads back to the origin. Use it as a route of
        unknown length until a flood or a record with a metric offers better."""
        if env.origin == self.node_id or self.routes.get(env.origin, now):
            return
        self.learn_route(env, Hop(hops=-2, metric=FALLBACK_ROUTE_METRIC), src, now, via)

    # ------------------------------------------------------------ HELLO
    def set_checkpoint(self, seq: int, head: bytes, signature: bytes) -> None:
        """The node signed a journal checkpoint over entry ``seq`` (hash ``head``): it
        rides on the next HELLO, then on every n-th (:mod:`.witness`)."""
        self.beacon.set(SignedCheckpoint(seq, head, signature))

    def _hello_due(self, key: bytes, now: float) -> None:
        timer = self.hello_timer
        if not timer.is_current(key):
            return                          # armed for a deadline a reset replaced
        if timer.due(now) is Fired.TRANSMIT:
            self._send_hello(now)
        self.schedule(timer.next_at(), TimerKind.HELLO, timer.timer_key())

    def _send_hello(self, now: float) -> None:
        self._hello_no += 1
        report = self.neighbours.hello_report(now, limits.MAX_HELLO_NEIGHBOURS)
        checkpoint = self.beacon.for_hello()
        wire_cp = None
        if checkpoint is not None:
            wire_cp = checkpoint.wire_value(self.wall_time(now))
            self.counters[OverlayCounter.TX_HELLO_CHECKPOINT] += 1
        payload = hello_payload(self._hello_no, self.role, report, wire_cp,
                                self.hello_timer.announced_s())
        env = self.seal(MsgType.HELLO, payload)
        self.transmit(env, Hop(), None, TxTag.HELLO)

    def hello_inconsistent(self, now: float, *, urgent: bool = False) -> None:
        """Something changed among the neighbours: HELLOs back to their fast rate
        (Trickle reset; ``urgent``: the next one as soon as the minimum gap allows)."""
        if self.hello_timer.inconsistent(now, urgent=urgent):
            self.counters[TrickleCounter.HELLO_RESETS] += 1
            self.schedule(self.hello_timer.next_at(), TimerKind.HELLO,
                          self.hello_timer.timer_key())

    def _on_hello(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        fields, checkpoint = decode_hello_untrusted(env.payload)
        hello_no = codec.read_int(fields[0], "hello.no")
        role = codec.read_str(fields[1], "hello.role", 16)
        report = codec.read_list(fields[2], "hello.neighbours", limits.MAX_HELLO_NEIGHBOURS)
        q_rev = _our_quality_in_report(report, self.short_id)  # validates every entry
        announced = hello_interval_untrusted(env.payload)
        known = self.neighbours.get(src)
        if known is not None and known.node_id == env.origin and env.seq <= known.last_seq:
            self.drop(DropReason.REPLAYED, src, now)
            return
        if not self.verified(env, src, now):
            return
        nb, is_new = self.neighbours.upsert(node_id=env.origin, key=env.origin_key, addr=src,
                                            role=role, hello_no=hello_no, seq=env.seq, now=now,
                                            interval_s=announced)
        if nb is None:
            self.drop(DropReason.NEIGHBOURS_FULL, src, now)
            return
        if q_rev is not None:
            nb.q_rev = q_rev / 255
        nb.report = report
        if is_new:
            self.forwarder.link_origins.forget(src)    # (a restart holds no keys)
            self._silent.discard(src)
            self.emit(NeighbourUp(neighbour=env.origin.hex(), addr=src, role=role))
            self.hello_inconsistent(now, urgent=True)
            self.anti_entropy.soon(now)
        elif q_rev is None and len(report) < limits.MAX_HELLO_NEIGHBOURS:
            # it does not list us while we hear it (a full report may leave us out: no
            # sign it misses us): it should hear us soon (the minimum gap allowing)
            self.hello_inconsistent(now, urgent=True)
        elif self.neighbours.reclass(nb, now):
            self.hello_inconsistent(now)        # its link changed class
        self.learn_route(env, Hop(), src, now)
        if self.routes.has_suspended_via(src):
            for route in self.routes.reinstate_via(src, now):
                self.emit(RouteChanged(dst=route.dst.hex(), next_hop=route.next_hop_id.hex()
                                       or src, hops=route.hops, metric=route.metric))
        if checkpoint is not None:
            self._witness(env, checkpoint, decode_sent_wall_untrusted(env.payload[3]), now)

    def _witness(self, env: Envelope, checkpoint: SignedCheckpoint, sent_wall: float | None,
                 now: float) -> None:
        """A neighbour's checkpoint (in its verified HELLO): journaled when its head moved
        (rate-limited per node, see :mod:`.witness`) and its signature, by the key that
        signed the HELLO, checks out."""
        table = self.witnesses
        heard = table.offer(env.origin, checkpoint, now)
        if heard is not Heard.JOURNAL:
            self.counters[HEARD_COUNTERS[heard]] += 1
            return
        message = checkpoint_message(env.origin, checkpoint.seq, checkpoint.head)
        if not self.verifier.verify(env.origin_key, message, checkpoint.signature):
            self.counters[OverlayCounter.WITNESS_BAD_SIGNATURE] += 1
            return
        evicted = table.evicted
        table.witnessed(env.origin, checkpoint, now)
        self.counters[OverlayCounter.WITNESS_EVICTED] += table.evicted - evicted
        self.counters[HEARD_COUNTERS[heard]] += 1
        self.emit(JournalWitnessed(node=env.origin.hex(), seq=checkpoint.seq,
                                   head=checkpoint.head.hex(), sig=checkpoint.signature.hex(),
                                   sent_wall=sent_wall))

    def _housekeeping_due(self, _key: bytes, now: float) -> None:
        # Routes via a silent neighbour are kept: HELLOs are lost more often than links
        # die. A route is replaced by any path offered while its next hop is silent, and
        # dropped when unicast over it goes unacknowledged.
        for nb in self.neighbours.expire(now):
            self.emit(NeighbourDown(neighbour=nb.node_id.hex(), addr=nb.addr))
            self.forwarder.link_origins.forget(nb.addr)
            self.hello_inconsistent(now)
            self._lost_neighbour_at = now
            if len(self._silent) < MAX_SILENT_TRACKED:
                self._silent.add(nb.addr)
        if self._watching_broken_links(now):
            self.hello_inconsistent(now)
        self.schedule(now + self.config.hello_interval_s, TimerKind.HOUSEKEEPING)

    def _watching_broken_links(self, now: float) -> bool:
        """Whether a neighbour was lost less than LOST_NEIGHBOUR_WATCH_S ago (walked
        behind a wall: it is likely back soon), or a route waits on a silent neighbour
        (unicast over it failed: traffic for that direction is held) since less than
        BROKEN_LINK_WATCH_S: our HELLOs then stay at Imin, so a healed partition is
        found as fast as with fixed HELLOs (the other side hears us, a new neighbour,
        and answers at once)."""
        if now - self._lost_neighbour_at < LOST_NEIGHBOUR_WATCH_S:
            return True
        broken = self._broken_since
        for addr in [a for a in broken if a not in self._silent
                     or not self.routes.has_suspended_via(a)]:
            del broken[addr]
        watching = False
        for addr in self._silent:
            if self.routes.has_suspended_via(addr):
                watching |= now - broken.setdefault(addr, now) < BROKEN_LINK_WATCH_S
        return watching

    # ------------------------------------------------------------ bindings and flooding
    def announce(self, binding: Binding, now: float, copies: int = 1) -> MergeResult:
        """Store our own new binding and flood it at once (no assessment delay).

        ``copies`` > 1 repeats the transmission back to back (a departing node instead
        re-sends its tombstones spaced out until a neighbour acknowledges them, see
        :mod:`.departure`: back-to-back copies are lost together and make the neighbours
        that hear them all suppress their rebroadcast)."""
        result = self.table.offer(binding, now, self.wall_time(now))
        self.journal_merge(result, binding, None)
        if result.changed:
            self.mark_seen(binding.envelope.digest, True)
            for _ in range(copies):
                self.transmit(binding.envelope, Hop(ttl=self.config.flood_ttl), None,
                              TxTag.BINDING)
            self.anti_entropy.soon(now)
        return result

    def _on_binding(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        binding: Binding | None = None
        if env.digest not in self._seen:  # (a duplicate is not decoded again)
            binding = binding_from_envelope_untrusted(env)
            refusal = self.admission_refusal(binding, src, now)
            if refusal is not None:
                self.drop(refusal, src, now)
                return
        if not self.verified_first_copy(env, src, now) or binding is None:
            if self._seen.get(env.digest):
                self.learn_route(env, hop, src, now)
                self.departures.on_duplicate(env, hop, src, now)
            return
        result = self.offer_binding(binding, now, hop.age_ms / 1000.0, src, hop)
        if result.outcome is MergeOutcome.REJECTED:
            self._seen[env.digest] = False  # later copies teach no route either
            return
        self.learn_route(env, hop, src, now)
        # A claim this node holds to be in conflict (open policy: another key holds the
        # AoR) is not re-flooded: joiners would meet it without the holder reports that
        # anti-entropy sends beside it (it still spreads there, marked as not held).
        if (result.changed and hop.ttl > 1 and len(self._pending_floods) < MAX_PENDING_FLOODS
                and (result.stored is None
                     or result.stored.state is not BindingState.CONFLICT)
                and self.admission.may_reflood(link_host(src), now)):
            delay = self.rng.uniform(self.config.rad_min_s, self.config.rad_max_s)
            self._pending_floods[env.digest] = PendingFlood(env, hop, src, now, 1)
            self.schedule(now + delay, TimerKind.REBROADCAST, env.digest)

    def offer_binding(self, binding: Binding, now: float, age_s: float,
                      src: LinkAddr | None, hop: Hop | None = None) -> MergeResult:
        """Merge a received binding; ``hop`` when it came flooded (else anti-entropy)."""
        revoked = self.trust.binding_refusal(binding) if self.trust.active else ""
        result = (MergeResult(MergeOutcome.REJECTED, reason=revoked) if revoked
                  else self.table.offer(binding, now, self.wall_time(now), age_s))
        self.journal_merge(result, binding, src)
        if result.changed:   # a new binding or tombstone: digests back to their fast rate
            self.anti_entropy.changed(now, learned=True)
            self.keys.learn(binding.key, binding.node_id)
        if result.outcome is MergeOutcome.REJECTED or result.outcome is MergeOutcome.STALE:
            self.drop(DropReason.of(result.reason), src, now)
        elif result.outcome is MergeOutcome.DEREGISTERED and src is not None:
            # A departure (it ended a binding we held): pass it on until every neighbour
            # has it; its origin is gone and cannot repair a loss (see .departure).
            self.departures.learned(binding.envelope, hop, age_s, src, now)
        elif result.changed:
            if result.outcome is MergeOutcome.NEW and src is not None:
                self.admission.admitted(link_host(src), now)
            if not binding.is_tombstone:
                contested = self.table.contested(binding.aor, now)
                if contested:
                    self.anti_entropy.ask_holders(binding.aor, contested, now)
        return result

    def journal_merge(self, result: MergeResult, binding: Binding, src: LinkAddr | None) -> None:
        if not result.changed or result.stored is None:
            if result.outcome is MergeOutcome.REJECTED:
                self.emit(BindingRejected(aor=binding.aor, node=binding.node_id.hex(),
                                          seq=binding.seq, reason=result.reason, via=src or ""))
            return
        state = result.stored.state.value
        kind = BindingLearned if result.outcome is MergeOutcome.NEW else BindingUpdated
        self.emit(kind(aor=binding.aor, node=binding.node_id.hex(), seq=binding.seq,
                       state=state, lifetime_s=binding.lifetime_s, via=src or "",
                       record=binding.record_id))
        if state == "conflict":
            self.emit(BindingConflict(aor=binding.aor, node=binding.node_id.hex(),
                                      seq=binding.seq))
        elif result.stored.handover_from >= 0:     # a role address handed over: the
            for other in self.table.lookup_all(binding.aor):   # claims it displaced
                if other.state.value == "conflict" and other.binding.key != binding.key:
                    self.emit(BindingConflict(aor=binding.aor, node=other.binding.node_id.hex(),
                                              seq=other.binding.seq))

    def _rebroadcast_due(self, digest: bytes, now: float) -> None:
        pending = self._pending_floods.pop(digest, None)
        if pending is None:
            return
        if pending.copies >= self.config.suppress_copies:
            self.counters[OverlayCounter.FLOOD_SUPPRESSED] += 1
            return
        hop = pending.hop
        cost = self.neighbours.cost(pending.src, now) if pending.src else 0
        age_ms = hop.age_ms + int((now - pending.received_at) * 1000)
        self.transmit(pending.envelope,
                      Hop(ttl=hop.ttl - 1, hops=hop.hops + 1, metric=hop.metric + cost,
                          age_ms=age_ms), None, TxTag.BINDING)

    # ------------------------------------------------------------ queries
    def who(self, now: float) -> list[WhoEntry]:
        out: list[WhoEntry] = []
        for stored in self.table:
            b = stored.binding
            if b.is_tombstone:
                continue
            route = self.routes.get(b.node_id, now)
            own = b.node_id == self.node_id
            nb = self.neighbours.by_id.get(b.node_id)
            via = self.neighbours.get(route.next_hop) if route is not None else None
            out.append(WhoEntry(
                aor=b.aor, node_id=b.node_id.hex(),
                hops=0 if own else (1 if nb else (route.hops if route and route.hops > 0
                                                   else None)),
                next_hop=None if own or via is None else via.node_id.hex(),
                state=stored.state.value, expires_s=max(0.0, stored.expires_at - now),
                contacts=b.contacts,
                handover_from=stored.handover_from if stored.handover_from >= 0 else None))
        out.sort(key=lambda e: (e.aor, e.node_id))
        return out


def _our_quality_in_report(report: list[object], short_id: bytes) -> int | None:
    """Validate a HELLO's neighbour report ([[short id, quality 0-255], ...]) and return
    the quality it gives ``short_id``. Inlined checks: this runs for every HELLO heard."""
    found: int | None = None
    for item in report:
        if (type(item) is not list or len(item) != 2 or type(item[0]) is not bytes
                or len(item[0]) != 4 or type(item[1]) is not int or not 0 <= item[1] <= 255):
            raise DecodeError("hello.neighbours: malformed entry")
        if item[0] == short_id:
            found = item[1]
    return found


#: The overlay is what its helpers see as their context: mypy checks here that it provides
#: every attribute and method :class:`~meshcomm.overlay.context.OverlayContext` lists.
_CONTEXT_CONFORMANCE: type[OverlayContext] = GossipOverlay
