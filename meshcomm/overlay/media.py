"""Media frames: unsigned, route-forwarded, with per-hop ARQ (like 802.11 unicast).

Voice cannot afford a signature per packet, so media travels outside the signed envelope
scheme: relays forward MEDIA frames along their routes without being able to check them;
the media layer at the two ends authenticates every payload with a per-call key.

Wire shapes (msgpack):

* MEDIA: ``[MEDIA_TAG, dst node id, origin node id, stream (8 bytes), ttl, payload]``
* ACK:   ``[MEDIA_ACK_TAG, frame id (8 bytes)]``, where the frame id is a hash of the
  frame's end-to-end fields (the same at every hop).

Each hop sends to the next hop of its route and retransmits after a short timeout a few
times (no backoff, no flood fallback: late voice is useless). The timeout follows the
hop's round trip (:mod:`meshcomm.overlay.rtt`, from acknowledgements of frames sent once),
and no copy leaves ``media_max_late_s`` after the first: on a slow uplink hop a frame gets
one retransmission or none instead of several that all arrive too late. Frames have their own
per-neighbour rate budget so media cannot starve signalling and vice versa.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.overlay.counters import MEDIA_DECODE_DROPS, DropReason, OverlayCounter, TxTag
from meshcomm.overlay.ratelimit import TokenBuckets
from meshcomm.overlay.rtt import GRANULARITY_S
from meshcomm.overlay.timers import TimerKind
from meshcomm.types import NODE_ID_LEN, Datagram, LinkAddr, NodeId
from meshcomm.wire import codec, limits

if TYPE_CHECKING:
    from meshcomm.overlay.context import OverlayContext

MEDIA_TAG = 1
MEDIA_ACK_TAG = 2
#: First byte of a MEDIA frame (fixarray of 6) and of an ACK (fixarray of 2). Envelope
#: frames start with 0x93 (fixarray of 3), so the three never collide.
MEDIA_MARKERS = (b"\x96", b"\x92")
STREAM_ID_LEN = 8
FRAME_ID_LEN = 8
MAX_MEDIA_PAYLOAD_BYTES = 1000
MEDIA_TTL = 16
SEEN_FRAMES = 4096
#: How long a frame given up on waits for its acknowledgement while its hop has no
#: round-trip estimate (a satellite hop's round trip, with room), seconds.
MEDIA_SAMPLE_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class MediaReceived:
    """A media frame reached this node, its destination. ``origin`` is as claimed by the
    sender; the media layer authenticates the payload."""

    origin: NodeId
    stream: bytes
    payload: bytes
    hops: int


@dataclass(slots=True)
class _Pending:
    frame: bytes
    next_hop: LinkAddr
    tries: int
    #: First sent on this hop at (round-trip sample, lateness bound).
    sent_at: float
    #: No more copies; only waiting for the acknowledgement (see MediaForwarder._give_up).
    given_up: bool = False


def _frame_id(dst: bytes, origin: bytes, stream: bytes, payload: bytes) -> bytes:
    return hashlib.blake2b(dst + origin + stream + payload, digest_size=FRAME_ID_LEN).digest()


@dataclass(frozen=True, slots=True)
class MediaFrame:
    dst: bytes
    origin: bytes
    stream: bytes
    ttl: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class MediaAck:
    frame_id: bytes


def decode_media_untrusted(data: bytes) -> MediaFrame | MediaAck:
    """Decode a MEDIA or ACK frame; raises only DecodeError."""
    value = codec.unpack_untrusted(data, check_depth=False)
    if not isinstance(value, list) or not value:
        raise DecodeError("media: expected a list")
    tag = codec.read_int(value[0], "media.tag", 0, 255)
    if tag == MEDIA_ACK_TAG:
        fields = codec.read_tuple(value, "media.ack", 2)
        return MediaAck(codec.read_bytes(fields[1], "media.ack.id", exact=FRAME_ID_LEN))
    if tag != MEDIA_TAG:
        raise DecodeError(f"media: unknown tag {tag}", reason="unknown_type")
    fields = codec.read_tuple(value, "media", 6)
    return MediaFrame(
        dst=codec.read_bytes(fields[1], "media.dst", exact=NODE_ID_LEN),
        origin=codec.read_bytes(fields[2], "media.origin", exact=NODE_ID_LEN),
        stream=codec.read_bytes(fields[3], "media.stream", exact=STREAM_ID_LEN),
        ttl=codec.read_int(fields[4], "media.ttl", 0, limits.MAX_TTL),
        payload=codec.read_bytes(fields[5], "media.payload", max_len=MAX_MEDIA_PAYLOAD_BYTES),
    )


class MediaForwarder:
    def __init__(self, ctx: OverlayContext) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self._limits = TokenBuckets(cfg.media_rate_limit_fps, cfg.media_rate_burst)
        self._pending: dict[bytes, _Pending] = {}
        self._seen: dict[bytes, None] = {}

    def send(self, dst: NodeId, stream: bytes, payload: bytes, now: float) -> None:
        if len(stream) != STREAM_ID_LEN:
            raise LocalProtocolError(f"media stream id must be {STREAM_ID_LEN} bytes")
        if len(payload) > MAX_MEDIA_PAYLOAD_BYTES:
            raise LocalProtocolError(f"media payload over {MAX_MEDIA_PAYLOAD_BYTES} bytes")
        fid = _frame_id(dst, self.ctx.node_id, stream, payload)
        self._remember(fid)
        self._forward(fid, dst, self.ctx.node_id, stream, MEDIA_TTL, payload, now)

    def _forward(self, fid: bytes, dst: bytes, origin: bytes, stream: bytes, ttl: int,
                 payload: bytes, now: float) -> None:
        next_hop = self.ctx.next_hop_to(NodeId(dst), now)
        if next_hop is None:
            self.ctx.counters[OverlayCounter.MEDIA_NO_ROUTE] += 1
            return
        frame = codec.pack([MEDIA_TAG, dst, origin, stream, ttl, payload])
        self._send(frame, next_hop)
        if len(self._pending) < self.ctx.config.max_pending_unicast * 4:
            self._pending[fid] = _Pending(frame, next_hop, 0, now)
            self.ctx.schedule(now + self._rto(next_hop), TimerKind.MEDIA_RETRANSMIT, fid)

    def _rto(self, next_hop: LinkAddr, tries: int = 0) -> float:
        """The per-hop ack timeout towards ``next_hop``: media_ack_timeout_s, or with
        ``adaptive_rto`` its round trip's (meshcomm.overlay.rtt), media_ack_timeout_s at
        least, media_max_late_s at most. While the hop has no
        round-trip estimate yet, it doubles with each retransmission (Karn's backoff), so
        the first frames on a hop slower than the floor stay pending until their
        acknowledgement arrives and give the first sample."""
        cfg = self.ctx.config
        if not cfg.adaptive_rto:
            return cfg.media_ack_timeout_s
        rto = self.ctx.rtt.rto(next_hop, cfg.media_ack_timeout_s,
                               max(cfg.media_ack_timeout_s, cfg.media_max_late_s))
        return rto if self.ctx.rtt.srtt(next_hop) is not None else rto * 2 ** tries

    def _send(self, frame: bytes, dst: LinkAddr) -> None:
        self.ctx.queue_raw(Datagram(frame, dst), TxTag.MEDIA)

    def retransmit_due(self, fid: bytes, now: float) -> None:
        pending = self._pending.get(fid)
        if pending is None:
            return
        if pending.given_up:                # it waited for its ack long enough
            del self._pending[fid]
            return
        if pending.tries >= self.ctx.config.media_retries:
            self._give_up(fid, pending, OverlayCounter.MEDIA_HOP_FAILED)
            return
        if now - pending.sent_at >= self.ctx.config.media_max_late_s - GRANULARITY_S:
            # a copy sent now would come too late to play
            self._give_up(fid, pending, OverlayCounter.MEDIA_TOO_LATE)
            return
        pending.tries += 1
        self.ctx.counters[OverlayCounter.MEDIA_RETRANSMITS] += 1
        self._send(pending.frame, pending.next_hop)
        self.ctx.schedule(now + self._rto(pending.next_hop, pending.tries),
                          TimerKind.MEDIA_RETRANSMIT, fid)

    def _give_up(self, fid: bytes, pending: _Pending, counter: OverlayCounter) -> None:
        """No more copies of this frame. While its hop has no round-trip estimate, the
        frame still waits (up to MEDIA_SAMPLE_WAIT_S) for its acknowledgement: on a hop
        slower than every retransmission, that is where the first sample comes from."""
        self.ctx.counters[counter] += 1
        if not self.ctx.config.adaptive_rto or self.ctx.rtt.srtt(pending.next_hop) is not None:
            del self._pending[fid]
            return
        pending.given_up = True
        self.ctx.schedule(pending.sent_at + MEDIA_SAMPLE_WAIT_S, TimerKind.MEDIA_RETRANSMIT,
                          fid)

    def receive(self, data: bytes, src: LinkAddr, now: float) -> None:
        if not self._limits.allow(src, now):
            self.ctx.drop(DropReason.MEDIA_RATE_LIMITED, src, now)
            return
        try:
            frame = decode_media_untrusted(data)
        except DecodeError as exc:
            self.ctx.drop(MEDIA_DECODE_DROPS.get(DropReason.of(exc.reason),
                                                 DropReason.MEDIA_MALFORMED), src, now)
            return
        if isinstance(frame, MediaAck):
            pending = self._pending.get(frame.frame_id)
            if pending is not None and pending.next_hop == src:
                del self._pending[frame.frame_id]
                if self.ctx.config.adaptive_rto:     # (the radio's relay path samples nothing)
                    self.ctx.rtt.acked(src, pending.sent_at, pending.tries > 0, now)
            return
        dst, origin, stream, ttl, payload = (frame.dst, frame.origin, frame.stream, frame.ttl,
                                             frame.payload)
        fid = _frame_id(dst, origin, stream, payload)
        self._send(codec.pack([MEDIA_ACK_TAG, fid]), src)
        if fid in self._seen:
            self.ctx.counters[OverlayCounter.MEDIA_DUPLICATES] += 1
            return
        self._remember(fid)
        if dst == self.ctx.node_id:
            self.ctx.counters[OverlayCounter.MEDIA_DELIVERED] += 1
            self.ctx.post_event(MediaReceived(NodeId(origin), stream, payload,
                                            MEDIA_TTL - ttl + 1))
        elif ttl <= 1:
            self.ctx.drop(DropReason.MEDIA_TTL_EXPIRED, src, now)
        else:
            self.ctx.counters[OverlayCounter.MEDIA_RELAYED] += 1
            self._forward(fid, dst, origin, stream, ttl - 1, payload, now)

    def _remember(self, fid: bytes) -> None:
        if len(self._seen) >= SEEN_FRAMES:
            del self._seen[next(iter(self._seen))]
        self._seen[fid] = None
