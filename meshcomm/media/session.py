"""One call leg's media relay (sans-IO): local RTP/RTCP <-> authenticated MEDIA payloads.

A :class:`MediaSession` belongs to one call (Call-ID) at one gateway. Each SDP m-line the
call uses becomes a :class:`StreamLeg` with the gateway's two local UDP ports for it (RTP
and RTCP) and, once the local client's SDP has passed, the client's RTP/RTCP addresses.

* :meth:`MediaSession.from_client`: an RTP or RTCP packet from the local client arrived at
  one of the leg's ports -> a :class:`MeshMedia` to hand to ``MeshNode.send_media``.
* :meth:`MediaSession.from_mesh`: the payload of a ``MediaReceived`` for one of the leg's
  receive streams -> verified, replay-checked -> a :class:`ClientPacket` to send from the
  leg's port to the client.

Each packet in gives at most one packet out, so these are plain calls returning the output
(no queue): this is the per-packet hot path. RTCP (RFC 3550 §6) travels like RTP on the
same stream with its own channel byte; with rtcp-mux (RFC 5761) negotiated by both clients
it arrives on, and is delivered to, the RTP port, and is told apart by RFC 5761 §4.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.media.counters import MediaCounter
from meshcomm.media.keys import CallKeys, KeyAgreement, ephemeral_public, stream_id
from meshcomm.media.packet import (
    MAX_COUNTER,
    MAX_PACKET_BYTES,
    MIN_PACKET_BYTES,
    MIN_RTCP_BYTES,
    Channel,
    ReplayVerdict,
    ReplayWindow,
    decode_media_untrusted,
    decrypt_media,
    encode_media,
)
from meshcomm.security.identity import node_id_of

Address = tuple[str, int]

#: RFC 3550 §5.1: the version field (top two bits of the first byte) is 2.
RTP_VERSION = 2
#: RFC 5761 §4: on a multiplexed port, second-byte values 192..223 are RTCP packet types.
RTCP_MUX_TYPE_MIN = 192
RTCP_MUX_TYPE_MAX = 223


class DropReason(enum.Enum):
    """Why a packet was not relayed (its counter: :data:`DROP_COUNTERS`)."""

    MALFORMED = "malformed"            # MEDIA payload undecodable
    TRUNCATED = "truncated"
    OVERSIZE = "oversize"              # MEDIA payload or local packet too large
    BAD_TAG = "bad_tag"                # forged or corrupted
    REPLAY = "replay"                  # counter already seen in the window
    TOO_OLD = "too_old"                # counter behind the window
    NOT_RTP = "not_rtp"                # local datagram is not RTP/RTCP version 2
    NOT_READY = "not_ready"            # no call keys yet (peer's SDP not seen)
    NO_CLIENT = "no_client"            # client address unknown or on hold (c=0.0.0.0)
    UNKNOWN_STREAM = "unknown_stream"  # MEDIA for no session of ours
    COUNTER_EXHAUSTED = "counter_exhausted"


_DECODE_REASONS = {"malformed": DropReason.MALFORMED, "truncated": DropReason.TRUNCATED,
                   "oversize": DropReason.OVERSIZE, "bad_tag": DropReason.BAD_TAG}
_REPLAY_REASONS = {ReplayVerdict.REPLAY: DropReason.REPLAY,
                   ReplayVerdict.TOO_OLD: DropReason.TOO_OLD}
#: The counter of each drop reason (a test checks every reason has one).
DROP_COUNTERS: Final[Mapping[DropReason, MediaCounter]] = {
    DropReason.MALFORMED: MediaCounter.DROP_MALFORMED,
    DropReason.TRUNCATED: MediaCounter.DROP_TRUNCATED,
    DropReason.OVERSIZE: MediaCounter.DROP_OVERSIZE,
    DropReason.BAD_TAG: MediaCounter.DROP_BAD_TAG,
    DropReason.REPLAY: MediaCounter.DROP_REPLAY,
    DropReason.TOO_OLD: MediaCounter.DROP_TOO_OLD,
    DropReason.NOT_RTP: MediaCounter.DROP_NOT_RTP,
    DropReason.NOT_READY: MediaCounter.DROP_NOT_READY,
    DropReason.NO_CLIENT: MediaCounter.DROP_NO_CLIENT,
    DropReason.UNKNOWN_STREAM: MediaCounter.DROP_UNKNOWN_STREAM,
    DropReason.COUNTER_EXHAUSTED: MediaCounter.DROP_COUNTER_EXHAUSTED,
}
#: Packets relayed, per channel and direction (a test checks every channel has both).
TO_MESH_COUNTERS: Final[Mapping[Channel, MediaCounter]] = {
    Channel.RTP: MediaCounter.RTP_TO_MESH, Channel.RTCP: MediaCounter.RTCP_TO_MESH}
TO_CLIENT_COUNTERS: Final[Mapping[Channel, MediaCounter]] = {
    Channel.RTP: MediaCounter.RTP_TO_CLIENT, Channel.RTCP: MediaCounter.RTCP_TO_CLIENT}


@dataclass(frozen=True, slots=True)
class LocalPorts:
    """The gateway's UDP ports for one m-line: RTP and RTCP, on ``address``."""

    address: str
    rtp_port: int
    rtcp_port: int


@dataclass(frozen=True, slots=True)
class ClientEndpoint:
    """Where the local client receives one m-line (from its SDP). None: on hold."""

    rtp: Address | None
    rtcp: Address | None
    rtcp_mux: bool


@dataclass(frozen=True, slots=True)
class PeerMedia:
    """The far gateway of a call: its node key, its media nonce and its ephemeral X25519
    key for the call (from signed SDP)."""

    public_key: bytes
    nonce: bytes
    eph_key: bytes = b""
    #: SHA-256 of ``public_key``, computed once: every packet to the peer is addressed by it.
    node_id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_id", node_id_of(self.public_key))


@dataclass(frozen=True, slots=True)
class MeshMedia:
    """A MEDIA frame to send: ``MeshNode.send_media(dst_node, stream, payload, now)``."""

    dst_node: bytes
    stream: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class ClientPacket:
    """A packet for the local client: send ``data`` to ``dst`` from the ``via`` port."""

    call_id: str
    index: int
    via: Channel
    data: bytes
    dst: Address


@dataclass(slots=True)
class StreamLeg:
    index: int
    ports: LocalPorts
    send_stream: bytes
    receive_stream: bytes | None = None
    send_counter: int = 0
    window: ReplayWindow = field(default_factory=ReplayWindow)


def classify_local(arrived_on: Channel, data: bytes) -> Channel | None:
    """RTP or RTCP for a datagram from the client; None if it is neither (e.g. STUN)."""
    if len(data) < MIN_RTCP_BYTES or data[0] >> 6 != RTP_VERSION:
        return None
    if arrived_on is Channel.RTCP:
        return Channel.RTCP
    if RTCP_MUX_TYPE_MIN <= data[1] <= RTCP_MUX_TYPE_MAX:
        return Channel.RTCP
    return Channel.RTP


class MediaSession:
    """The media state of one call at one gateway."""

    def __init__(self, call_id: str, local_nonce: bytes, eph_secret: bytes) -> None:
        self.call_id = call_id
        self.local_nonce = local_nonce
        #: This gateway's ephemeral key for the call: the secret lives until the call keys
        #: are computed (then None: forward secrecy), the public part goes in the SDP.
        self._eph_secret: bytes | None = eph_secret
        self.eph_public = ephemeral_public(eph_secret)
        self.peer: PeerMedia | None = None
        self.keys: CallKeys | None = None
        self.legs: dict[int, StreamLeg] = {}
        #: per m-line index: the local client's endpoint (from its latest SDP)
        self.clients: dict[int, ClientEndpoint] = {}
        #: per m-line index: whether the far client's latest SDP offered rtcp-mux
        self.peer_mux: dict[int, bool] = {}
        self.counters: Counter[str] = Counter()
        self.last_activity_s: float | None = None

    # ------------------------------------------------------------ set-up
    def add_leg(self, index: int, ports: LocalPorts) -> StreamLeg:
        if index in self.legs:
            raise LocalProtocolError(f"m-line {index} of {self.call_id!r} already has ports")
        leg = StreamLeg(index, ports, stream_id(self.call_id, self.local_nonce, index))
        if self.peer is not None:
            leg.receive_stream = stream_id(self.call_id, self.peer.nonce, index)
        self.legs[index] = leg
        return leg

    def set_peer(self, peer: PeerMedia, agreement: KeyAgreement) -> bool:
        """Learn the far gateway (first SDP from the mesh). True if it was new.

        A later SDP of the same call must name the same peer: a changed key or nonce
        raises DecodeError (the gateway answers 488); keys are never re-agreed mid-call.
        """
        if self.peer is not None:
            if peer != self.peer:
                raise DecodeError("media peer changed within the call",
                                  status_hint=488, reason="media_peer_changed")
            return False
        if self._eph_secret is None:
            raise LocalProtocolError("the call's ephemeral secret is gone")
        self.keys = agreement.call_keys(peer.public_key, self.call_id, self.local_nonce,
                                        peer.nonce, local_eph_secret=self._eph_secret,
                                        peer_eph=peer.eph_key)
        self._eph_secret = None
        self.peer = peer
        for leg in self.legs.values():
            leg.receive_stream = stream_id(self.call_id, peer.nonce, leg.index)
        return True

    # ------------------------------------------------------------ packet path
    def drop(self, reason: DropReason) -> None:
        self.counters[DROP_COUNTERS[reason]] += 1

    def from_client(self, index: int, arrived_on: Channel, data: bytes,
                    now: float) -> MeshMedia | None:
        """A datagram from the local client at leg ``index``'s ``arrived_on`` port."""
        self.counters[MediaCounter.CLIENT_IN] += 1
        leg = self.legs.get(index)
        if leg is None:
            raise LocalProtocolError(f"no m-line {index} in {self.call_id!r}")
        if len(data) > MAX_PACKET_BYTES:
            self.drop(DropReason.OVERSIZE)
            return None
        channel = classify_local(arrived_on, data)
        if channel is None or len(data) < MIN_PACKET_BYTES[channel]:
            self.drop(DropReason.NOT_RTP)
            return None
        if self.keys is None or self.peer is None:
            self.drop(DropReason.NOT_READY)
            return None
        if leg.send_counter > MAX_COUNTER:
            self.drop(DropReason.COUNTER_EXHAUSTED)
            return None
        payload = encode_media(self.keys.send_key, leg.send_stream, leg.send_counter,
                               channel, data)
        leg.send_counter += 1
        self.last_activity_s = now
        self.counters[TO_MESH_COUNTERS[channel]] += 1
        return MeshMedia(self.peer.node_id, leg.send_stream, payload)

    def from_mesh(self, index: int, payload: bytes, now: float) -> ClientPacket | None:
        """The payload of a MEDIA frame on leg ``index``'s receive stream."""
        self.counters[MediaCounter.MESH_IN] += 1
        leg = self.legs.get(index)
        if self.keys is None or leg is None or leg.receive_stream is None:
            self.drop(DropReason.NOT_READY)
            return None
        try:
            media = decode_media_untrusted(payload)
        except DecodeError as exc:
            self.drop(_DECODE_REASONS.get(exc.reason, DropReason.MALFORMED))
            return None
        verdict = leg.window.check(media.counter)
        if verdict is not ReplayVerdict.FRESH:
            self.drop(_REPLAY_REASONS[verdict])
            return None
        packet = decrypt_media(self.keys.receive_key, leg.receive_stream, media)
        if packet is None:
            self.drop(DropReason.BAD_TAG)
            return None
        leg.window.accept(media.counter)
        self.last_activity_s = now
        return self._to_client(leg, media.channel, packet)

    def _to_client(self, leg: StreamLeg, channel: Channel, data: bytes) -> ClientPacket | None:
        client = self.clients.get(leg.index)
        if client is None or client.rtp is None:
            self.drop(DropReason.NO_CLIENT)
            return None
        via, dst = Channel.RTP, client.rtp
        muxed = client.rtcp_mux and self.peer_mux.get(leg.index, False)
        if channel is Channel.RTCP and not muxed:
            if client.rtcp is None:
                self.drop(DropReason.NO_CLIENT)
                return None
            via, dst = Channel.RTCP, client.rtcp
        self.counters[TO_CLIENT_COUNTERS[channel]] += 1
        return ClientPacket(self.call_id, leg.index, via, data, dst)
