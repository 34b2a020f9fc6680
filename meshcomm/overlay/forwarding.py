"""Hop-by-hop forwarding of unicast envelopes with per-hop acknowledgement.

A UNICAST envelope (payload ``[dst, kind, body, flags, frag]``, the trailing ``frag`` and
``flags`` left out while empty / 0) is signed by its origin and checked at every hop.
``dst`` is the first DST_PREFIX_LEN (8) bytes of the destination's NodeId (issue 13, "short
on the wire"): the destination compares it with its own; a relay finds the full NodeId (its
routes are keyed by it) in the key directory, else among its routes and neighbours; a prefix
that matches two known nodes is refused (``drop_ambiguous_dst``), never forwarded to either.
A prefix no relay can tell from another node's is astronomically unlikely by chance (2^-64)
and costs an attacker a 2^64-step key search; the destination's sealed body is bound to its
full NodeId anyway (meshcomm.node.e2e_sip). The first copy of a unicast to a neighbour names
its origin by short id instead of carrying its key once that neighbour acknowledged a frame
of that origin (:mod:`.keydir`), and so does a carrier's (:mod:`.acks`); retransmissions
carry the key. A routed copy is marked addressed (a flag of the frame: the link layer names
the neighbour it goes to); a scoped flood's copies are not. ``flags`` bit 0 marks
best-effort traffic (media): no per-hop acknowledgement or retransmission. A body larger
than one datagram is split into fragments (``frag = [message id, index, count]``, each
fragment signed on its own) and reassembled at the destination within
``REASSEMBLY_TIMEOUT_S``.

Each hop sends it to the next hop of its route and waits for that hop's acknowledgement:
the envelope's ack id (6 bytes of its digest) under the link's MAC, alone or riding on a
frame coming back (:mod:`.acks`; a signed ACK envelope only where the link has no key
yet). It retransmits after the link's timeout (:mod:`.rtt`: its measured round trip,
``rto_min_s`` at least, plus the receiver's ``ack_delay_s``), doubling it each time, and
after ``max_retransmits`` (and ``retransmit_span_s``) drops that route and falls back to a
scoped flood (a TTL-limited broadcast that the destination recognises). With no route at
all the scoped flood is used at once.

No passive acknowledgement: the radio edge sends a routed unicast as UDP unicast to the
next hop's address, which the previous hop does not receive (802.11 filters unicast frames
by MAC address), so it cannot overhear the forwarding. The one frame it could overhear, a
scoped flood (broadcast) of the next hop, is not counted as an acknowledgement either: the
next hop acknowledges explicitly anyway, and these floods are the rare fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.journal.payloads import RouteChanged
from meshcomm.overlay.counters import DropReason, OverlayCounter, TxTag
from meshcomm.overlay.keydir import LinkOrigins
from meshcomm.overlay.timers import TimerKind
from meshcomm.types import Datagram, LinkAddr, NodeId
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import DST_PREFIX_LEN, Envelope, Hop, MsgType

if TYPE_CHECKING:
    from meshcomm.overlay.context import OverlayContext

MAX_UNICAST_KIND = 255
#: Growth of a frame's timeout with each retransmission. Radio loss is mostly random, not
#: congestion: 1.5 (not TCP's 2) keeps a frame lost three times on a 25 ms hop under 0.2 s
#: (sim, 5-chain at 30% loss: p95 405 / 153 ms against 483 / 582 ms with 2, no more bytes).
BACKOFF_FACTOR = 1.5
#: Copies of one frame on one hop at most (see OverlayConfig.retransmit_span_s): a dead
#: next hop costs at most this many frames before the scoped flood.
MAX_TRIES = 8
#: Ceiling of a backed-off timeout, seconds.
MAX_BACKED_OFF_S = 3.0
#: Ceiling of a link's acknowledgement timeout before backoff, seconds (a satellite hop's
#: round trip with room; see meshcomm.overlay.rtt).
MAX_ACK_TIMEOUT_S = 2.0
FLAG_BEST_EFFORT = 0x01
MAX_FRAGMENTS = 16
#: Largest unicast message, in bytes, after reassembly.
MAX_MESSAGE_BYTES = MAX_FRAGMENTS * limits.MAX_UNICAST_BODY_BYTES
MESSAGE_ID_LEN = 8
REASSEMBLY_TIMEOUT_S = 30.0
#: TTL of a unicast at its origin: the wire's maximum, not the flood TTL. A route can be
#: longer than a flood reaches (anti-entropy hands records on with their hop counts: the
#: bench's seed-1 run had a 17-hop route under a 16 flood TTL), and the hop before the end
#: acknowledged, then dropped it (ttl_expired) on every retry. Unicast cannot circle: every
#: node forwards only the first copy; a scoped flood still takes min(ttl, scoped_flood_ttl).
UNICAST_TTL = limits.MAX_TTL
#: Incomplete messages held at once (oldest evicted first).
MAX_REASSEMBLIES = 64


@dataclass(frozen=True, slots=True)
class UnicastReceived:
    """A unicast envelope reached this node, its destination."""

    origin: NodeId
    origin_key: bytes
    kind: int
    body: bytes
    hops: int
    seq: int
    #: Id of the message's (first) envelope (``Envelope.digest``, what ``Forwarder.send``
    #: returned to the origin): journals on both ends name the message by it.
    env: bytes = b""


@dataclass(slots=True)
class PendingHop:
    envelope: Envelope
    #: the destination, None if this relay knows only its prefix (scoped flood)
    dst: NodeId | None
    hop: Hop
    next_hop: LinkAddr
    tries: int
    due: float
    #: When it was first sent to ``next_hop`` (its acknowledgement, if it was sent once,
    #: is a round-trip sample of that link).
    sent_at: float


@dataclass(slots=True)
class _Reassembly:
    started: float
    count: int
    parts: dict[int, bytes]
    hops: int
    first: bytes = b""              # digest of fragment 0 (the message's envelope id)


class Forwarder:
    def __init__(self, ctx: OverlayContext) -> None:
        self.ctx = ctx
        #: ack id -> the frame sent to its next hop and not acknowledged yet
        self._awaiting_ack: dict[bytes, PendingHop] = {}
        self._reassembly: dict[tuple[bytes, bytes], _Reassembly] = {}
        self._message_no = 0
        #: per neighbour link, the origins it holds the key of (elided on first copies)
        self.link_origins = LinkOrigins()

    @property
    def awaiting_ack(self) -> int:
        """Unicast envelopes sent by this hop and not acknowledged yet: the node's backlog
        (bulk traffic such as journal collection waits while it is high)."""
        return len(self._awaiting_ack)

    def send(self, dst: NodeId, kind: int, body: bytes, now: float, *,
             best_effort: bool = False) -> bytes:
        """Originate a unicast message; returns the digest of its (first) envelope.

        Bodies over one datagram are fragmented (at most MAX_MESSAGE_BYTES)."""
        if len(body) > MAX_MESSAGE_BYTES:
            raise LocalProtocolError(f"unicast message over {MAX_MESSAGE_BYTES} bytes")
        if not 0 <= kind <= MAX_UNICAST_KIND:
            raise LocalProtocolError(f"unicast kind {kind} outside 0..{MAX_UNICAST_KIND}")
        flags = FLAG_BEST_EFFORT if best_effort else 0
        size = limits.MAX_UNICAST_BODY_BYTES
        chunks = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
        frag: list[object] = []
        first = b""
        if len(chunks) > 1:
            self._message_no += 1
            msg_id = self._message_no.to_bytes(MESSAGE_ID_LEN, "big")
        for index, chunk in enumerate(chunks):
            if len(chunks) > 1:
                frag = [msg_id, index, len(chunks)]
            fields: list[object] = [dst[:DST_PREFIX_LEN], kind, chunk, flags, frag]
            env = self.ctx.seal(MsgType.UNICAST, fields[:5 if frag else 4 if flags else 3])
            self.ctx.mark_seen(env.digest, True)
            self._forward(env, Hop(ttl=UNICAST_TTL), dst, now, best_effort)
            first = first or env.digest
        return first

    def _forward(self, env: Envelope, hop: Hop, dst: NodeId | None, now: float,
                 best_effort: bool) -> None:
        next_addr = self.ctx.next_hop_to(dst, now) if dst is not None else None
        if next_addr is None or len(self._awaiting_ack) >= self.ctx.config.max_pending_unicast:
            self._scoped_flood(env, hop, now)
            return
        elide = self.link_origins.holds(next_addr, env.origin)
        self.ctx.counters[OverlayCounter.UNICAST_KEY_ELIDED] += elide
        out = Hop(ttl=hop.ttl, hops=hop.hops, metric=hop.metric, age_ms=0, addressed=True,
                  key_elided=elide)
        ack_id = env.ack_id
        if best_effort or ack_id in self._awaiting_ack:
            # (a clash of ack ids: 2^-48 by chance, else an origin's own doing)
            self.ctx.counters[OverlayCounter.UNICAST_ACK_ID_CLASH] += not best_effort
            self.ctx.transmit(env, out, next_addr, TxTag.UNICAST)
            return
        carried = self.ctx.acks.carrier(env, out, next_addr, now)
        if carried is not None:     # no ack of its own: see meshcomm.overlay.acks
            self.ctx.queue_raw(Datagram(carried, next_addr), TxTag.UNICAST)
            return
        self.ctx.transmit(env, out, next_addr, TxTag.UNICAST)
        due = now + self._rto(next_addr, now)
        self._awaiting_ack[ack_id] = PendingHop(env, dst, out, next_addr, 0, due, now)
        self.ctx.schedule(due, TimerKind.RETRANSMIT, ack_id)

    def _scoped_flood(self, env: Envelope, hop: Hop, now: float) -> None:
        ttl = min(hop.ttl, self.ctx.config.scoped_flood_ttl)
        self.ctx.counters[OverlayCounter.UNICAST_SCOPED_FLOOD] += 1
        self.ctx.transmit(env, Hop(ttl=ttl, hops=hop.hops, metric=hop.metric), None, TxTag.UNICAST)

    def retransmit_due(self, ack_id: bytes, now: float) -> None:
        pending = self._awaiting_ack.get(ack_id)
        if pending is None or pending.due > now:
            return
        cfg = self.ctx.config
        if pending.tries < cfg.max_retransmits or (
                pending.tries < MAX_TRIES and now - pending.sent_at < cfg.retransmit_span_s):
            pending.tries += 1
            self.ctx.counters[OverlayCounter.UNICAST_RETRANSMITS] += 1
            # a retransmission carries the origin's key (the receiver may have lost it)
            self.ctx.transmit(pending.envelope, replace(pending.hop, key_elided=False),
                              pending.next_hop, TxTag.UNICAST)
            backed_off = self._rto(pending.next_hop, now) * BACKOFF_FACTOR ** pending.tries
            pending.due = now + min(MAX_BACKED_OFF_S, backed_off)
            self.ctx.schedule(pending.due, TimerKind.RETRANSMIT, ack_id)
            return
        del self._awaiting_ack[ack_id]
        self.ctx.counters[OverlayCounter.UNICAST_NEXT_HOP_FAILED] += 1
        dst = pending.dst
        route = self.ctx.routes.get(dst, now) if dst is not None else None
        if dst is not None and route is not None and route.next_hop == pending.next_hop:
            self.ctx.routes.suspend(dst, now)
            self.ctx.emit(RouteChanged(dst=dst.hex(), next_hop=None, hops=None, metric=None))
        self._scoped_flood(pending.envelope, replace(pending.hop, key_elided=False), now)

    def on_ack(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        """A signed ACK envelope (the fallback of a link without a key): its payload is
        the 16-byte digest of the acknowledged envelope."""
        digest = codec.read_bytes(env.payload, "ack", exact=16)
        pending = self._awaiting_ack.get(digest[:limits.ACK_ID_LEN])
        if pending is None or pending.next_hop != src or pending.envelope.digest != digest:
            return
        if self.ctx.verified(env, src, now):
            self.acked([digest[:limits.ACK_ID_LEN]], src, now)

    def acked(self, ack_ids: list[bytes], src: LinkAddr, now: float) -> None:
        """The neighbour at ``src`` acknowledged ``ack_ids`` (authenticated by the caller):
        each frame sent to it among them is done, and gives a round-trip sample."""
        for ack_id in ack_ids:
            pending = self._awaiting_ack.get(ack_id)
            if pending is None or pending.next_hop != src:
                continue
            del self._awaiting_ack[ack_id]
            self.ctx.counters[OverlayCounter.UNICAST_ACKED] += 1
            self.link_origins.acked(src, pending.envelope.origin)
            self.ctx.rtt.acked(src, pending.sent_at, pending.tries > 0, now)

    def _rto(self, next_hop: LinkAddr, now: float) -> float:
        """The acknowledgement timeout towards ``next_hop`` (before backoff): its measured
        round trip's (meshcomm.overlay.rtt) plus the time the receiver may hold the ack."""
        cfg = self.ctx.config
        return cfg.ack_delay_s + self.ctx.rtt.timeout(
            next_hop, now, initial_s=cfg.ack_timeout_s, floor_s=cfg.rto_min_s,
            ceiling_s=MAX_ACK_TIMEOUT_S)

    def on_unicast(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        dst, kind, body, flags, frag = _read_unicast(env.payload)
        best_effort = bool(flags & FLAG_BEST_EFFORT)
        addressed = hop.addressed
        first = self.ctx.verified_first_copy(env, src, now)
        if (not first and self.ctx.seen(env.digest)
                and self.ctx.acks.resend_carrier(src, env.ack_id, now)):
            return          # our ack rode on a frame back, and that was lost: again
        # A unicast that carries acks is their carrier: it needs no ack (.acks).
        if addressed and not best_effort and not hop.acks and self.ctx.seen(env.digest):
            self._acknowledge(env, src, now, at_once=not first)
        if not first:
            return
        self.ctx.learn_route(env, hop, src, now)
        if dst == self.ctx.node_id[:DST_PREFIX_LEN]:
            self._deliver(env, kind, body, frag, hop.hops + 1, now)
            return
        if hop.ttl <= 1:
            self.ctx.drop(DropReason.TTL_EXPIRED, src, now)
            return
        node, ambiguous = self._resolve_dst(dst, now)
        if ambiguous:
            self.ctx.drop(DropReason.AMBIGUOUS_DST, src, now)
            return
        cost = self.ctx.neighbours.cost(src, now)
        nxt = Hop(ttl=hop.ttl - 1, hops=hop.hops + 1, metric=hop.metric + cost)
        if node is not None and (addressed or self.ctx.routes.get(node, now) is not None):
            self._forward(env, nxt, node, now, best_effort)
        else:
            self._scoped_flood(env, nxt, now)

    def _resolve_dst(self, prefix: bytes, now: float) -> tuple[NodeId | None, bool]:
        """The node a destination prefix names (None if unknown), and whether it is
        ambiguous (two known nodes match it: refused). The key directory first, else
        the neighbours and routes (bounded tables; only for a prefix it does not hold)."""
        keys = self.ctx.keys
        node = keys.node(prefix)
        if node is not None or keys.ambiguous(prefix):
            return node, node is None
        found = {n for n in self.ctx.neighbours.by_id if n[:DST_PREFIX_LEN] == prefix}
        found.update(r.dst for r in self.ctx.routes.all() if r.dst[:DST_PREFIX_LEN] == prefix)
        if len(found) > 1:
            return None, True
        return (found.pop() if found else None), False

    def _acknowledge(self, env: Envelope, src: LinkAddr, now: float, *,
                     at_once: bool) -> None:
        """Owe ``src`` the ack of ``env`` (:mod:`.acks`); a duplicate is acked at once
        (our ack, or the frame that carried it, was lost). Without a key for the link
        (its HELLO not heard yet) the ack is a signed envelope, as before."""
        nb = self.ctx.neighbours.get(src)
        if nb is not None and self.ctx.acks.keys.usable(nb.key):
            self.ctx.acks.owe(src, nb.key, env.ack_id, now, at_once=at_once)
            return
        self.ctx.counters[OverlayCounter.ACKS_SIGNED] += 1
        self.ctx.transmit(self.ctx.seal(MsgType.ACK, env.digest), Hop(), src, TxTag.ACK)

    def _deliver(self, env: Envelope, kind: int, body: bytes,
                 frag: tuple[bytes, int, int] | None, hops: int, now: float) -> None:
        if frag is None:
            self.ctx.post_event(UnicastReceived(env.origin, env.origin_key, kind, body, hops,
                                              env.seq, env.digest))
            return
        msg_id, index, count = frag
        key = (env.origin, msg_id)
        slot = self._reassembly.get(key)
        if slot is None:
            self._expire_reassembly(now)
            slot = self._reassembly[key] = _Reassembly(now, count, {}, hops)
        if slot.count != count:
            self.ctx.drop(DropReason.BAD_FRAGMENT, None, now)
            return
        slot.parts[index] = body
        slot.hops = max(slot.hops, hops)
        if index == 0:
            slot.first = env.digest
        if len(slot.parts) == count:
            del self._reassembly[key]
            whole = b"".join(slot.parts[i] for i in range(count))
            self.ctx.post_event(UnicastReceived(env.origin, env.origin_key, kind, whole,
                                              slot.hops, env.seq, slot.first))

    def _expire_reassembly(self, now: float) -> None:
        for key, slot in list(self._reassembly.items()):
            if now - slot.started > REASSEMBLY_TIMEOUT_S:
                del self._reassembly[key]
                self.ctx.counters[OverlayCounter.UNICAST_REASSEMBLY_TIMEOUT] += 1
        while len(self._reassembly) >= MAX_REASSEMBLIES:
            del self._reassembly[next(iter(self._reassembly))]
            self.ctx.counters[OverlayCounter.UNICAST_REASSEMBLY_EVICTED] += 1


def _read_unicast(payload: object) -> tuple[bytes, int, bytes, int,
                                            tuple[bytes, int, int] | None]:
    """Validate a UNICAST payload: [dst prefix, kind, body(, flags(, frag))]."""
    fields = codec.read_list(payload, "unicast", 5)
    if len(fields) < 3:
        raise DecodeError("unicast: expected [dst, kind, body(, flags(, frag))]")
    dst = codec.read_bytes(fields[0], "unicast.dst", exact=DST_PREFIX_LEN)
    kind = codec.read_int(fields[1], "unicast.kind", 0, MAX_UNICAST_KIND)
    body = codec.read_bytes(fields[2], "unicast.body", max_len=limits.MAX_UNICAST_BODY_BYTES)
    flags = codec.read_int(fields[3], "unicast.flags", 0, 0xFF) if len(fields) > 3 else 0
    raw_frag = codec.read_list(fields[4], "unicast.frag", 3) if len(fields) > 4 else []
    if not raw_frag:
        return dst, kind, body, flags, None
    if len(raw_frag) != 3:
        raise DecodeError("unicast.frag: expected [message id, index, count]")
    count = codec.read_int(raw_frag[2], "unicast.frag.count", 2, MAX_FRAGMENTS)
    frag = (codec.read_bytes(raw_frag[0], "unicast.frag.id", exact=MESSAGE_ID_LEN),
            codec.read_int(raw_frag[1], "unicast.frag.index", 0, count - 1), count)
    return dst, kind, body, flags, frag
