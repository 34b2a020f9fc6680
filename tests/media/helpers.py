"""Shared pieces of the media tests: client SDP, synthetic PCMU RTP, a call set-up."""

from __future__ import annotations

import math
import random
import struct

from meshcomm.media.relay import MediaRelay, SdpPath, SequentialPortAllocator
from meshcomm.security.identity import Identity

SAMPLE_RATE_HZ = 8000
PACKET_INTERVAL_S = 0.02
SAMPLES_PER_PACKET = 160
_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


def ulaw(sample: int) -> int:
    """G.711 mu-law encoding of one 16-bit linear sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sign else sample, _ULAW_CLIP) + _ULAW_BIAS
    exponent = min(7, max(0, (magnitude >> 7).bit_length() - 1))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def sine_pcmu(seq: int, freq_hz: float = 440.0) -> bytes:
    """20 ms of a sine tone, PCMU-encoded, continuous across packets."""
    start = seq * SAMPLES_PER_PACKET
    return bytes(ulaw(int(12000 * math.sin(2 * math.pi * freq_hz * (start + i) / SAMPLE_RATE_HZ)))
                 for i in range(SAMPLES_PER_PACKET))


def rtp_packet(seq: int, ssrc: int, freq_hz: float = 440.0) -> bytes:
    """RFC 3550 RTP packet, payload type 0 (PCMU), 20 ms of tone."""
    header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * SAMPLES_PER_PACKET) & 0xFFFFFFFF,
                         ssrc)
    return header + sine_pcmu(seq, freq_hz)


def rtcp_receiver_report(ssrc: int) -> bytes:
    """An empty RTCP RR (RFC 3550 §6.4.2): V=2, RC=0, PT=201, length 1."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def client_sdp(address: str, port: int, *, direction: str = "sendrecv", mux: bool = False,
               extra: str = "", version: int = 1) -> bytes:
    lines = ["v=0", f"o=- 1234 {version} IN IP4 {address}", "s=-", f"c=IN IP4 {address}",
             "t=0 0", f"m=audio {port} RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000",
             "a=rtpmap:101 telephone-event/8000", "a=ptime:20", f"a={direction}"]
    if mux:
        lines.append("a=rtcp-mux")
    text = "\r\n".join(lines) + "\r\n" + extra
    return text.encode()


def make_relay(n: int, first_port: int = 30000) -> MediaRelay:
    identity = Identity(bytes([n]) * 32)
    return MediaRelay(identity, SequentialPortAllocator("127.0.0.1", first_port, first_port + 100),
                      random.Random(n))


def set_up_call(caller: MediaRelay, callee: MediaRelay, call_id: str, offer: bytes,
                answer: bytes, now: float | None = 0.0) -> tuple[bytes, bytes]:
    """Offer from the caller's client, answer from the callee's client, both through the
    two gateways' hooks. Returns (offer as the callee's client sees it, answer as the
    caller's client sees it)."""
    on_mesh = caller.rewrite_sdp(SdpPath.CLIENT_TO_MESH, call_id, offer, now)
    seen_by_callee = callee.rewrite_sdp(SdpPath.MESH_TO_CLIENT, call_id, on_mesh, now)
    answer_on_mesh = callee.rewrite_sdp(SdpPath.CLIENT_TO_MESH, call_id, answer, now)
    seen_by_caller = caller.rewrite_sdp(SdpPath.MESH_TO_CLIENT, call_id, answer_on_mesh, now)
    return seen_by_callee, seen_by_caller
