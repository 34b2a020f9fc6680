"""The MEDIA payload: one encrypted and authenticated RTP or RTCP packet (sans-IO).

Layout (the payload of an overlay MEDIA frame, after its 8-byte stream id)::

    counter  8 bytes   big-endian, per stream, strictly increasing at the sender
    channel  1 byte    0 = RTP, 1 = RTCP
    packet   n bytes   the RTP/RTCP packet as the client sent it, encrypted
    tag     16 bytes   the AEAD's tag

The AEAD is XChaCha20-Poly1305 (IETF) under the call's direction key; its nonce is the
frame's sequence: ``stream id (8) | counter (8) | 8 zero bytes``, unique per key because a
stream's counter never repeats at its sender and stream ids differ per m-line; the
associated data is ``stream id | counter | channel``. The payload is exactly as long as
before encryption was added (the tag replaced a BLAKE2b tag of the same size).

Relays cannot read or check it (they do not hold the call key); the receiving gateway
checks the sliding replay window (RFC 4303 §3.4.3 style, 1024 packets), opens the packet,
then records the counter.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.media.keys import STREAM_ID_SIZE_BYTES

COUNTER_SIZE_BYTES = 8
CHANNEL_SIZE_BYTES = 1
HEADER_SIZE_BYTES = COUNTER_SIZE_BYTES + CHANNEL_SIZE_BYTES
TAG_SIZE_BYTES = 16
#: The overlay carries at most this many payload bytes in one MEDIA frame.
MAX_MEDIA_PAYLOAD_BYTES = 1000
#: Largest RTP/RTCP packet that fits one MEDIA payload.
MAX_PACKET_BYTES = MAX_MEDIA_PAYLOAD_BYTES - HEADER_SIZE_BYTES - TAG_SIZE_BYTES
#: RFC 3550 §5.1: fixed RTP header; §6.4: shortest RTCP packet (empty RR).
MIN_RTP_BYTES = 12
MIN_RTCP_BYTES = 8
MIN_MEDIA_PAYLOAD_BYTES = HEADER_SIZE_BYTES + MIN_RTCP_BYTES + TAG_SIZE_BYTES
MAX_COUNTER = 2**64 - 1
REPLAY_WINDOW_PACKETS = 1024
AEAD_NONCE_PAD = bytes(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
                       - STREAM_ID_SIZE_BYTES - COUNTER_SIZE_BYTES)


class Channel(enum.IntEnum):
    RTP = 0
    RTCP = 1


#: Shortest packet of each channel (RFC 3550 §5.1, §6.4).
MIN_PACKET_BYTES = {Channel.RTP: MIN_RTP_BYTES, Channel.RTCP: MIN_RTCP_BYTES}


@dataclass(frozen=True, slots=True)
class MediaPacket:
    counter: int
    channel: Channel
    packet: bytes
    tag: bytes


def _nonce(stream: bytes, header: bytes) -> bytes:
    return stream + header[:COUNTER_SIZE_BYTES] + AEAD_NONCE_PAD


def encode_media(key: bytes, stream: bytes, counter: int, channel: Channel,
                 packet: bytes) -> bytes:
    """The authenticated MEDIA payload of ``packet``; raises LocalProtocolError on misuse."""
    if len(stream) != STREAM_ID_SIZE_BYTES:
        raise LocalProtocolError("stream id must be 8 bytes")
    if not 0 <= counter <= MAX_COUNTER:
        raise LocalProtocolError("media counter out of range")
    if not MIN_PACKET_BYTES[channel] <= len(packet) <= MAX_PACKET_BYTES:
        raise LocalProtocolError(f"{channel.name} packet size {len(packet)} out of range")
    header = counter.to_bytes(COUNTER_SIZE_BYTES, "big") + bytes([channel])
    sealed: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        packet, stream + header, _nonce(stream, header), key)
    return header + sealed


def decode_media_untrusted(payload: bytes) -> MediaPacket:
    """Split a MEDIA payload into its fields (no tag check). Raises only DecodeError."""
    size = len(payload)
    if size > MAX_MEDIA_PAYLOAD_BYTES:
        raise DecodeError("media payload too large", reason="oversize")
    if size < MIN_MEDIA_PAYLOAD_BYTES:
        raise DecodeError("media payload truncated", reason="truncated")
    channel_byte = payload[COUNTER_SIZE_BYTES]
    if channel_byte not in (Channel.RTP, Channel.RTCP):
        raise DecodeError("unknown media channel", reason="malformed")
    channel = Channel(channel_byte)
    packet = payload[HEADER_SIZE_BYTES:size - TAG_SIZE_BYTES]
    if len(packet) < MIN_PACKET_BYTES[channel]:
        raise DecodeError("media packet truncated", reason="truncated")
    return MediaPacket(counter=int.from_bytes(payload[:COUNTER_SIZE_BYTES], "big"),
                       channel=channel, packet=packet, tag=payload[size - TAG_SIZE_BYTES:])


def decrypt_media(key: bytes, stream: bytes, media: MediaPacket) -> bytes | None:
    """The client's packet inside ``media`` (decoded, still encrypted); None if it does
    not authenticate under ``key`` and ``stream`` (forged, corrupted, another call)."""
    header = media.counter.to_bytes(COUNTER_SIZE_BYTES, "big") + bytes([media.channel])
    try:
        plain: bytes = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            media.packet + media.tag, stream + header, _nonce(stream, header), key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        return None
    return plain


def open_media_untrusted(key: bytes, stream: bytes, payload: bytes) -> MediaPacket:
    """Decode, authenticate and decrypt (the result's ``packet`` is the client's packet);
    raises only DecodeError (reason ``bad_tag`` on forgery)."""
    media = decode_media_untrusted(payload)
    if len(stream) != STREAM_ID_SIZE_BYTES or len(key) != 32:
        raise DecodeError("bad media key or stream id", reason="bad_tag")
    plain = decrypt_media(key, stream, media)
    if plain is None:
        raise DecodeError("media tag does not verify", reason="bad_tag")
    return MediaPacket(media.counter, media.channel, plain, media.tag)


class ReplayVerdict(enum.Enum):
    FRESH = "fresh"
    REPLAY = "replay"       # inside the window, already seen
    TOO_OLD = "too_old"     # behind the window


class ReplayWindow:
    """Sliding window over 64-bit counters: a bit per counter below the highest seen."""

    def __init__(self, size_packets: int = REPLAY_WINDOW_PACKETS) -> None:
        if size_packets <= 0:
            raise LocalProtocolError("replay window must hold at least one packet")
        self.size_packets = size_packets
        self.highest = -1
        self._seen = 0  # bit i set: counter (highest - i) was accepted

    def check(self, counter: int) -> ReplayVerdict:
        """Verdict for ``counter`` without recording it (check the tag, then accept)."""
        if counter > self.highest:
            return ReplayVerdict.FRESH
        behind = self.highest - counter
        if behind >= self.size_packets:
            return ReplayVerdict.TOO_OLD
        return ReplayVerdict.REPLAY if (self._seen >> behind) & 1 else ReplayVerdict.FRESH

    def accept(self, counter: int) -> None:
        """Record an authenticated ``counter`` (its verdict must have been FRESH)."""
        mask = (1 << self.size_packets) - 1
        if counter > self.highest:
            shift = counter - self.highest
            self._seen = ((self._seen << shift) | 1) & mask if shift < self.size_packets else 1
            self.highest = counter
        else:
            self._seen |= 1 << (self.highest - counter)
