"""Two gateways' media relays wired by hand: SDP rewriting, packets both ways, drops."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.media.counters import MediaCounter
from meshcomm.media.packet import Channel
from meshcomm.media.relay import (
    EndReason,
    MediaConfig,
    MediaRelay,
    MediaSetupError,
    SdpPath,
    SequentialPortAllocator,
)
from meshcomm.media.sdp_rewrite import (
    EPH_ATTRIBUTE,
    KEY_ATTRIBUTE,
    NONCE_ATTRIBUTE,
    advertised_address,
)
from meshcomm.media.session import ClientPacket, MeshMedia
from meshcomm.security.identity import Identity
from meshcomm.sip.sdp import Direction, parse_sdp_untrusted
from tests.media.helpers import (
    client_sdp,
    make_relay,
    rtcp_receiver_report,
    rtp_packet,
    set_up_call,
)

CALL = "call-1@example"
A_CLIENT = ("127.0.0.1", 40000)
B_CLIENT = ("127.0.0.1", 50000)


def pair(mux: bool = False) -> tuple[MediaRelay, MediaRelay, bytes, bytes]:
    a, b = make_relay(1, 30000), make_relay(2, 31000)
    to_b, to_a = set_up_call(a, b, CALL, client_sdp(*A_CLIENT, mux=mux),
                             client_sdp(*B_CLIENT, mux=mux))
    return a, b, to_b, to_a


def to_mesh(src: MediaRelay, data: bytes, channel: Channel = Channel.RTP,
            now: float = 1.0) -> MeshMedia:
    out = src.from_client(CALL, 0, channel, data, now)
    assert isinstance(out, MeshMedia)
    return out


def carry(src: MediaRelay, dst: MediaRelay, data: bytes, channel: Channel = Channel.RTP,
          now: float = 1.0) -> ClientPacket | None:
    out = to_mesh(src, data, channel, now)
    assert out.dst_node == dst.node_id
    return dst.from_mesh(src.node_id, out.stream, out.payload, now)


def test_each_client_sees_its_own_gateway_and_no_mesh_attributes() -> None:
    _a, _b, to_b, to_a = pair()
    for body, port in ((to_b, 31000), (to_a, 30000)):
        sdp = parse_sdp_untrusted(body)
        m = sdp.media[0]
        assert (m.connection or sdp.connection).address == "127.0.0.1"  # type: ignore[union-attr]
        assert m.port == port
        assert not m.has_attribute("rtcp")                  # RTCP on port + 1
        names = {k for k, _ in sdp.attributes}
        assert NONCE_ATTRIBUTE not in names and KEY_ATTRIBUTE not in names
        assert m.rtpmaps()[0].encoding == "PCMU" and m.direction is Direction.SENDRECV


def test_mesh_body_carries_key_and_nonce_and_keeps_client_address() -> None:
    a = make_relay(1)
    on_mesh = parse_sdp_untrusted(a.rewrite_sdp(SdpPath.CLIENT_TO_MESH, CALL,
                                                 client_sdp(*A_CLIENT)))
    assert on_mesh.attributes[-3] == (KEY_ATTRIBUTE, a.agreement.public_key.hex())
    assert on_mesh.attributes[-2][0] == NONCE_ATTRIBUTE
    session = a.sessions[CALL]
    assert on_mesh.attributes[-1] == (EPH_ATTRIBUTE, session.eph_public.hex())
    assert on_mesh.media[0].port == A_CLIENT[1]


def test_payloads_are_encrypted_and_the_call_secret_is_dropped_once_keyed() -> None:
    a, b, _, _ = pair()
    assert a.sessions[CALL]._eph_secret is None and b.sessions[CALL]._eph_secret is None
    packet = rtp_packet(7, 0xA)
    out = a.from_client(CALL, 0, Channel.RTP, packet, 0.0)
    assert out is not None
    assert packet[12:] not in out.payload and len(out.payload) == len(packet) + 9 + 16
    # a replay of the same frame is refused; a changed byte does not open
    assert b.from_mesh(a.node_id, out.stream, out.payload, 0.0) is not None
    assert b.from_mesh(a.node_id, out.stream, out.payload, 0.0) is None
    assert b.counters[MediaCounter.DROP_REPLAY] + b.sessions[CALL].counters[
        MediaCounter.DROP_REPLAY] == 1
    out2 = a.from_client(CALL, 0, Channel.RTP, rtp_packet(8, 0xA), 0.0)
    assert out2 is not None
    forged = bytearray(out2.payload)
    forged[20] ^= 1
    assert b.from_mesh(a.node_id, out2.stream, bytes(forged), 0.0) is None
    assert b.from_mesh(a.node_id, out2.stream, out2.payload, 0.0) is not None


def test_rtp_flows_both_ways_to_the_clients_sdp_addresses() -> None:
    a, b, _, _ = pair()
    for seq in range(50):
        got = carry(a, b, rtp_packet(seq, 0xA))
        assert got == ClientPacket(CALL, 0, Channel.RTP, rtp_packet(seq, 0xA), B_CLIENT)
        back = carry(b, a, rtp_packet(seq, 0xB))
        assert back == ClientPacket(CALL, 0, Channel.RTP, rtp_packet(seq, 0xB), A_CLIENT)
    assert a.sessions[CALL].counters["rtp_to_mesh"] == 50
    assert b.sessions[CALL].counters["rtp_to_client"] == 50


def test_rtcp_goes_to_port_plus_one_without_mux() -> None:
    a, b, _, _ = pair()
    got = carry(a, b, rtcp_receiver_report(0xA), Channel.RTCP)
    assert got is not None and got.via is Channel.RTCP
    assert got.dst == (B_CLIENT[0], B_CLIENT[1] + 1)


def test_rtcp_mux_is_recognised_on_the_rtp_port_and_kept_there() -> None:
    a, b, to_b, _ = pair(mux=True)
    assert parse_sdp_untrusted(to_b).media[0].has_attribute("rtcp-mux")
    got = carry(a, b, rtcp_receiver_report(0xA), Channel.RTP)
    assert got is not None and (got.via, got.dst) == (Channel.RTP, B_CLIENT)
    assert a.sessions[CALL].counters["rtcp_to_mesh"] == 1


def test_replay_forgery_and_wrong_origin_are_dropped_and_counted() -> None:
    a, b, _, _ = pair()
    frame = to_mesh(a, rtp_packet(1, 0xA))
    assert b.from_mesh(a.node_id, frame.stream, frame.payload, 1.0) is not None
    assert b.from_mesh(a.node_id, frame.stream, frame.payload, 1.0) is None      # replay
    fresh = to_mesh(a, rtp_packet(2, 0xA))
    forged = fresh.payload[:-1] + bytes([fresh.payload[-1] ^ 1])
    assert b.from_mesh(a.node_id, frame.stream, forged, 1.0) is None
    assert b.from_mesh(a.node_id, frame.stream, frame.payload[:15], 1.0) is None
    assert b.from_mesh(b"\x09" * 32, frame.stream, frame.payload, 1.0) is None   # origin
    counters = b.sessions[CALL].counters
    assert counters["drop_replay"] == 1
    assert counters["drop_bad_tag"] == 1
    assert counters["drop_truncated"] == 1
    assert b.counters["drop_unknown_stream"] == 1


def test_a_third_gateway_cannot_inject_into_the_call() -> None:
    a, b, _, _ = pair()
    eve = make_relay(3, 32000)
    # Eve learns the signalling (it is signed, not secret) and sets up "the same" call.
    set_up_call(eve, b, "other", client_sdp(*A_CLIENT), client_sdp(*B_CLIENT))
    frame = to_mesh(a, rtp_packet(1, 0xA))
    eve_frame = eve.from_client("other", 0, Channel.RTP, rtp_packet(1, 0xE), 1.0)
    assert eve_frame is not None
    # Eve claims to be A on A's stream with a payload made under her own key.
    assert b.from_mesh(a.node_id, frame.stream, eve_frame.payload, 1.0) is None
    assert b.sessions[CALL].counters["drop_bad_tag"] == 1


def test_local_junk_is_not_relayed() -> None:
    a, _b, _, _ = pair()
    stun = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x00" * 12
    assert a.from_client(CALL, 0, Channel.RTP, stun, 1.0) is None
    assert a.from_client(CALL, 0, Channel.RTP, b"\x80" * 2000, 1.0) is None
    assert a.from_client("no-such-call", 0, Channel.RTP, rtp_packet(1, 1), 1.0) is None
    counters = a.sessions[CALL].counters
    assert (counters["drop_not_rtp"], counters["drop_oversize"]) == (1, 1)
    assert a.counters["drop_no_session"] == 1


def test_hold_and_resume_pass_through() -> None:
    a, b, _, _ = pair()
    # B's client puts A on hold, old style (c=0.0.0.0) with sendonly, in a re-INVITE.
    hold = client_sdp("0.0.0.0", B_CLIENT[1], direction="sendonly", version=2)
    on_mesh = b.rewrite_sdp(SdpPath.CLIENT_TO_MESH, CALL, hold)
    seen = parse_sdp_untrusted(a.rewrite_sdp(SdpPath.MESH_TO_CLIENT, CALL, on_mesh))
    m = seen.media[0]
    assert m.direction is Direction.SENDONLY
    assert m.connection is not None and m.connection.is_null
    assert m.port == 30000                                   # same gateway port as before
    assert carry(a, b, rtp_packet(1, 0xA)) is None           # B's client is not listening
    assert b.sessions[CALL].counters["drop_no_client"] == 1
    assert carry(b, a, rtp_packet(1, 0xB)) is not None       # music on hold still flows
    resume = client_sdp(*B_CLIENT, version=3)
    a.rewrite_sdp(SdpPath.MESH_TO_CLIENT, CALL, b.rewrite_sdp(SdpPath.CLIENT_TO_MESH, CALL,
                                                             resume))
    assert carry(a, b, rtp_packet(2, 0xA)) is not None


def test_sdp_from_the_mesh_without_our_attributes_is_488() -> None:
    b = make_relay(2)
    with pytest.raises(DecodeError) as info:
        b.rewrite_sdp(SdpPath.MESH_TO_CLIENT, CALL, client_sdp(*A_CLIENT))
    assert info.value.status_hint == 488
    assert CALL not in b.sessions


def test_a_changed_peer_nonce_mid_call_is_488() -> None:
    a, b, _, _ = pair()
    # Same node key, new nonce (e.g. a restarted gateway).
    other = MediaRelay(Identity(b"\x01" * 32), SequentialPortAllocator("127.0.0.1"),
                       random.Random(99))
    on_mesh = other.rewrite_sdp(SdpPath.CLIENT_TO_MESH, CALL, client_sdp(*A_CLIENT))
    with pytest.raises(DecodeError) as info:
        b.rewrite_sdp(SdpPath.MESH_TO_CLIENT, CALL, on_mesh)
    assert info.value.status_hint == 488
    assert carry(a, b, rtp_packet(1, 0xA)) is not None       # the call goes on


def test_end_call_releases_ports_and_reports() -> None:
    a, b, _, _ = pair()
    carry(a, b, rtp_packet(1, 0xA))
    b.end_call(CALL, 5.0)
    b.end_call(CALL, 5.0)                                     # idempotent
    event = b.next_event()
    assert event is not None and event.reason is EndReason.HANGUP
    assert dict(event.counters)["rtp_to_client"] == 1
    assert b.next_event() is None
    frame = to_mesh(a, rtp_packet(2, 0xA))
    assert b.from_mesh(a.node_id, frame.stream, frame.payload, 6.0) is None
    # The same ports serve the next call.
    set_up_call(a, b, "call-2", client_sdp(*A_CLIENT), client_sdp(*B_CLIENT))
    assert b.sessions["call-2"].legs[0].ports.rtp_port == 31000


def test_idle_calls_are_ended_by_the_timer() -> None:
    a = MediaRelay(Identity(b"\x01" * 32), SequentialPortAllocator("127.0.0.1"),
                   random.Random(1), MediaConfig(idle_timeout_s=30.0))
    b = make_relay(2)
    set_up_call(a, b, CALL, client_sdp(*A_CLIENT), client_sdp(*B_CLIENT), now=100.0)
    assert a.next_timer() == 130.0
    a.from_client(CALL, 0, Channel.RTP, rtp_packet(1, 1), 120.0)
    a.on_timer(130.0)
    assert CALL in a.sessions and a.next_timer() == 150.0
    a.on_timer(150.0)
    event = a.next_event()
    assert CALL not in a.sessions and event is not None and event.reason is EndReason.IDLE
    assert a.next_timer() is None


def test_port_and_call_exhaustion_are_503() -> None:
    b = MediaRelay(Identity(b"\x02" * 32), SequentialPortAllocator("127.0.0.1", 20000, 20003),
                   random.Random(2), MediaConfig(max_calls=3))
    a = make_relay(1)
    set_up_call(a, b, "c1", client_sdp(*A_CLIENT), client_sdp(*B_CLIENT))
    set_up_call(a, b, "c2", client_sdp(*A_CLIENT), client_sdp(*B_CLIENT))
    with pytest.raises(MediaSetupError) as info:
        set_up_call(a, b, "c3", client_sdp(*A_CLIENT), client_sdp(*B_CLIENT))
    assert info.value.status_hint == 503
    # An offer of b's own client holds no ports (issue 8: allocated lazily); the answer
    # from the mesh needs them and is refused.
    offer = b.rewrite_sdp(SdpPath.CLIENT_TO_MESH, "c4", client_sdp(*B_CLIENT))
    answer = a.rewrite_sdp(SdpPath.CLIENT_TO_MESH, "c4", client_sdp(*A_CLIENT))
    assert a.rewrite_sdp(SdpPath.MESH_TO_CLIENT, "c4", offer)
    with pytest.raises(MediaSetupError):
        b.rewrite_sdp(SdpPath.MESH_TO_CLIENT, "c4", answer)


def test_call_slots_count_calls_with_ports_not_offers_waiting_for_an_answer() -> None:
    b = MediaRelay(Identity(b"\x02" * 32), SequentialPortAllocator("127.0.0.1", 20000, 20999),
                   random.Random(2), MediaConfig(max_calls=2))
    a = make_relay(1)
    for call in ("c1", "c2"):
        set_up_call(a, b, call, client_sdp(*A_CLIENT), client_sdp(*B_CLIENT))
    assert b.calls_with_ports == 2
    with pytest.raises(MediaSetupError) as info:       # both slots taken: a new offer
        b.rewrite_sdp(SdpPath.CLIENT_TO_MESH, "c3", client_sdp(*B_CLIENT))
    assert info.value.status_hint == 503 and b.counters["calls_refused"] == 1
    b.end_call("c1", 1.0)
    # 60 INVITEs a second that go unanswered for 4 s: 240 offers, no slot taken.
    c = MediaRelay(Identity(b"\x03" * 32), SequentialPortAllocator("127.0.0.1", 22000, 22999),
                   random.Random(3), MediaConfig(max_calls=64))
    for i in range(240):
        c.rewrite_sdp(SdpPath.CLIENT_TO_MESH, f"unanswered-{i}", client_sdp(*A_CLIENT), i / 60)
    assert c.calls_with_ports == 0 and len(c.sessions) == 240
    with pytest.raises(MediaSetupError):               # the offer bound: 4 per call slot
        for i in range(240, 300):
            c.rewrite_sdp(SdpPath.CLIENT_TO_MESH, f"unanswered-{i}", client_sdp(*A_CLIENT))
    assert len(c.sessions) == c.config.offer_limit == 256
    for i in range(240):                               # the INVITEs time out: released
        c.end_call(f"unanswered-{i}", 5.0)
    set_up_call(make_relay(4), c, "answered", client_sdp(*A_CLIENT), client_sdp(*B_CLIENT))
    assert c.calls_with_ports == 1


def test_a_negotiated_call_without_media_is_reclaimed_in_seconds() -> None:
    a, b = make_relay(1), make_relay(2)
    set_up_call(a, b, CALL, client_sdp(*A_CLIENT), client_sdp(*B_CLIENT), now=100.0)
    # an offer still waiting for its answer (ringing) keeps the long limit
    a.rewrite_sdp(SdpPath.CLIENT_TO_MESH, "ringing", client_sdp(*A_CLIENT), 100.0)
    a.from_client(CALL, 0, Channel.RTP, rtp_packet(1, 1), 110.0)
    assert a.next_timer() == 110.0 + a.config.media_idle_timeout_s
    a.on_timer(139.0)
    assert CALL in a.sessions
    a.on_timer(140.0)                                  # peer vanished: 30 s of silence
    assert CALL not in a.sessions and "ringing" in a.sessions
    event = a.next_event()
    assert event is not None and event.reason is EndReason.IDLE
    assert a.next_timer() == 100.0 + a.config.idle_timeout_s


@given(st.binary(max_size=600))
def test_any_mesh_body_gives_sdp_or_decode_error(body: bytes) -> None:
    b = make_relay(2)
    try:
        out = b.rewrite_sdp(SdpPath.MESH_TO_CLIENT, CALL, body)
    except DecodeError:
        return
    parse_sdp_untrusted(out)


@given(st.binary(max_size=1100))
def test_any_media_payload_is_dropped_without_raising(payload: bytes) -> None:
    a, b, _, _ = RELAYS
    stream = to_mesh(a, rtp_packet(0, 1)).stream
    assert b.from_mesh(a.node_id, stream, payload, 1.0) is None


RELAYS = pair()


def test_a_hook_call_without_time_never_ends_the_call_early() -> None:
    a, b = make_relay(1), make_relay(2)
    b.on_timer(5000.0)                                         # b has seen the clock
    set_up_call(a, b, CALL, client_sdp(*A_CLIENT), client_sdp(*B_CLIENT), now=None)
    when = b.next_timer()
    assert when is not None
    stamped_at = max(when, 5000.0)
    b.on_timer(stamped_at)
    assert CALL in b.sessions                                  # stamped, not expired
    b.on_timer(stamped_at + b.config.idle_timeout_s)
    assert CALL not in b.sessions


def test_ports_on_a_wildcard_are_written_as_the_gateway_address_toward_the_client() -> None:
    """A relay gateway listening on 0.0.0.0 (LAN softphones, an upstream PBX) wrote c=0.0.0.0
    into the SDP it gave its client: no media. It writes the address the client reaches
    the gateway at (what the gateway writes in its Via toward that client) instead."""
    caller = make_relay(1)
    callee = MediaRelay(Identity(bytes([2]) * 32),
                        SequentialPortAllocator("0.0.0.0", 31000, 31100), random.Random(2))
    on_mesh = caller.rewrite_sdp(SdpPath.CLIENT_TO_MESH, CALL, client_sdp(*A_CLIENT))
    seen = parse_sdp_untrusted(callee.rewrite_sdp(SdpPath.MESH_TO_CLIENT, CALL, on_mesh,
                                                  client_host="192.168.7.1"))
    assert seen.connection is not None and seen.connection.address == "192.168.7.1"
    m = seen.media[0]
    assert m.connection is not None and m.connection.address == "192.168.7.1"
    assert m.port == 31000
    # without the gateway's address (or one an IPv4 wildcard cannot take) it stays
    other = parse_sdp_untrusted(callee.rewrite_sdp(SdpPath.MESH_TO_CLIENT, "c2", on_mesh))
    assert other.connection is not None and other.connection.address == "0.0.0.0"


def test_advertised_address_keeps_families_apart() -> None:
    assert advertised_address("127.0.0.1", "10.0.0.1") == "127.0.0.1"      # not a wildcard
    assert advertised_address("0.0.0.0", "10.0.0.1") == "10.0.0.1"
    assert advertised_address("0.0.0.0", "[fe80::1]") == "0.0.0.0"          # v4 socket
    assert advertised_address("::", "[fd00::7]") == "fd00::7"
    assert advertised_address("::", "10.0.0.1") == "10.0.0.1"               # dual stack
    assert advertised_address("0.0.0.0", "") == "0.0.0.0"
