"""Hop-by-hop forwarding of unicast envelopes with per-hop acknowledgement.

A UNICAST envelope (payload ``[dst node id, kind, body]``) is signed by its origin and
checked at every hop. Each hop sends it to the next hop of its route and waits for an ACK
(signed by the next hop, naming the envelope digest); it retransmits after
``ack_timeout_s`` with backoff, and after ``max_retransmits`` drops that route and falls
back to a scoped flood (a TTL-limited broadcast that the destination recognises). With no
route at all the scoped flood is used at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshcomm.errors import LocalProtocolError
from meshcomm.journal.events import JournalEventType as J
from meshcomm.overlay.timers import TimerKind
from meshcomm.types import NODE_ID_LEN, LinkAddr, NodeId
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import Envelope, Hop, MsgType

if TYPE_CHECKING:
    from meshcomm.overlay.core import GossipOverlay

MAX_UNICAST_KIND = 255
BACKOFF_FACTOR = 1.5
SCOPED_RAD_S = (0.002, 0.03)


@dataclass(frozen=True, slots=True)
class UnicastReceived:
    """A unicast envelope reached this node, its destination."""

    origin: NodeId
    origin_key: bytes
    kind: int
    body: bytes
    hops: int
    seq: int


@dataclass(slots=True)
class PendingHop:
    envelope: Envelope
    hop: Hop
    next_hop: LinkAddr
    tries: int
    due: float


class Forwarder:
    def __init__(self, overlay: GossipOverlay) -> None:
        self.o = overlay
        self._awaiting_ack: dict[bytes, PendingHop] = {}

    @property
    def pending(self) -> int:
        return len(self._awaiting_ack)

    def send(self, dst: NodeId, kind: int, body: bytes, now: float) -> bytes:
        """Originate a unicast envelope; returns its digest (message id)."""
        if len(body) > limits.MAX_UNICAST_BODY_BYTES:
            raise LocalProtocolError(f"unicast body over {limits.MAX_UNICAST_BODY_BYTES} bytes")
        env = self.o.seal(MsgType.UNICAST, [dst, kind, body])
        self.o.mark_seen(env.digest, True)
        self._forward(env, Hop(ttl=self.o.config.flood_ttl), dst, now)
        return env.digest

    def _forward(self, env: Envelope, hop: Hop, dst: NodeId, now: float) -> None:
        route = self.o.routes.get(dst, now)
        nb = self.o.neighbours.by_id.get(dst)
        next_addr = nb.addr if nb is not None else (route.next_hop if route else None)
        if next_addr is None or len(self._awaiting_ack) >= self.o.config.max_pending_unicast:
            self._scoped_flood(env, hop, now)
            return
        next_id = self.o.neighbours.get(next_addr)
        to = next_id.node_id[:4] if next_id is not None else b""
        out = Hop(ttl=hop.ttl, hops=hop.hops, metric=hop.metric, age_ms=0, to=to)
        self.o.transmit(env, out, next_addr, "unicast")
        due = now + self.o.config.ack_timeout_s
        self._awaiting_ack[env.digest] = PendingHop(env, out, next_addr, 0, due)
        self.o.schedule(due, TimerKind.RETRANSMIT, env.digest)

    def _scoped_flood(self, env: Envelope, hop: Hop, now: float) -> None:
        ttl = min(hop.ttl, self.o.config.scoped_flood_ttl)
        self.o.counters["unicast_scoped_flood"] += 1
        self.o.transmit(env, Hop(ttl=ttl, hops=hop.hops, metric=hop.metric), None, "unicast")

    def retransmit_due(self, digest: bytes, now: float) -> None:
        pending = self._awaiting_ack.get(digest)
        if pending is None or pending.due > now:
            return
        if pending.tries < self.o.config.max_retransmits:
            pending.tries += 1
            self.o.counters["unicast_retransmits"] += 1
            self.o.transmit(pending.envelope, pending.hop, pending.next_hop, "unicast")
            pending.due = now + self.o.config.ack_timeout_s * BACKOFF_FACTOR ** pending.tries
            self.o.schedule(pending.due, TimerKind.RETRANSMIT, digest)
            return
        del self._awaiting_ack[digest]
        self.o.counters["unicast_next_hop_failed"] += 1
        dst = NodeId(pending.envelope.payload[0])
        route = self.o.routes.get(dst, now)
        if route is not None and route.next_hop == pending.next_hop:
            self.o.routes.drop(dst)
            self.o.emit(J.ROUTE_CHANGED, dst=dst.hex(), next_hop=None, hops=None, metric=None)
        self._scoped_flood(pending.envelope, pending.hop, now)

    def on_ack(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        digest = codec.read_bytes(env.payload, "ack", exact=16)
        pending = self._awaiting_ack.get(digest)
        if pending is None or pending.next_hop != src:
            return
        if not env.verify(self.o.verifier):
            self.o.drop("bad_signature", src, now)
            return
        del self._awaiting_ack[digest]
        self.o.counters["unicast_acked"] += 1

    def on_unicast(self, env: Envelope, hop: Hop, src: LinkAddr, now: float) -> None:
        fields = codec.read_tuple(env.payload, "unicast", 3)
        dst = NodeId(codec.read_bytes(fields[0], "unicast.dst", exact=NODE_ID_LEN))
        kind = codec.read_int(fields[1], "unicast.kind", 0, MAX_UNICAST_KIND)
        body = codec.read_bytes(fields[2], "unicast.body", max_len=limits.MAX_UNICAST_BODY_BYTES)
        addressed = hop.to == self.o.short_id
        first = self.o.verified_first_copy(env, src, now)
        if addressed and self.o.seen(env.digest):
            ack = self.o.seal(MsgType.ACK, env.digest)
            self.o.transmit(ack, Hop(), src, "ack")
        if not first:
            return
        self.o.learn_route(env, hop, src, now)
        if dst == self.o.node_id:
            self.o.post_event(UnicastReceived(env.origin, env.origin_key, kind, body,
                                              hop.hops + 1, env.seq))
            return
        if hop.ttl <= 1:
            self.o.drop("ttl_expired", src, now)
            return
        cost = self.o.neighbours.cost(src, now)
        nxt = Hop(ttl=hop.ttl - 1, hops=hop.hops + 1, metric=hop.metric + cost)
        if addressed or self.o.routes.get(dst, now) is not None:
            self._forward(env, nxt, dst, now)
        else:
            self._scoped_flood(env, nxt, now)
