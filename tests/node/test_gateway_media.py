"""The SIP gateway with the media relay as its SDP hook, across an in-memory mesh: stock UAs
call each other, synthetic RTP crosses as MEDIA frames both ways for the life of the call,
ports are released when it ends (BYE, CANCEL, failure), and SDP the media layer refuses is
answered 400/488/503 (or dropped and counted)."""

from __future__ import annotations

from meshcomm.media.relay import MediaConfig
from meshcomm.node.gateway.types import Address
from meshcomm.sip.build import build_response
from meshcomm.sip.message import SipRequest, SipResponse, parse_message_untrusted
from meshcomm.sip.sdp import NotAcceptable, answer_offer, make_offer, parse_sdp_untrusted
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import (
    CallEnded,
    CallEstablished,
    CallRinging,
    CallUpdated,
    IncomingCall,
    RequestFailed,
)
from tests.media.helpers import client_sdp, rtp_packet
from tests.node.gateway_net import DOMAIN, Net, of_kind, registered

ALICE_PORT, BOB_PORT = 5070, 5072
ALICE_RTP, BOB_RTP = 4000, 6000
PACKET_INTERVAL_S = 0.02


def _setup(net: Net) -> tuple[UserAgent, UserAgent]:
    net.converge()
    alice = registered(net, 0, ALICE_PORT, "alice")
    bob = registered(net, len(net.stations) - 1, BOB_PORT, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    return alice, bob


def _answer(ua: UserAgent, event: IncomingCall, port: int) -> None:
    assert event.offer is not None
    result = answer_offer(event.offer, address="127.0.0.1", rtp_port=port, session_id=2)
    assert not isinstance(result, NotAcceptable)
    ua.answer(event.call, result[0])


def exchange_rtp(net: Net, call_id: str, caller: int, callee: int,
                 packets: int = 500) -> tuple[list[bytes], list[bytes]]:
    """Both clients send ``packets`` RTP packets, one every PACKET_INTERVAL_S (each must be
    taken by its call's session), then the net runs 1 s more; what each side sent."""
    sent_a = [rtp_packet(seq, 0xA11CE) for seq in range(packets)]
    sent_b = [rtp_packet(seq, 0xB0B, 880.0) for seq in range(packets)]
    for pa, pb in zip(sent_a, sent_b, strict=True):
        assert net.client_media(caller, call_id, pa)
        assert net.client_media(callee, call_id, pb)
        net.run_for(PACKET_INTERVAL_S)
    net.run_for(1.0)
    return sent_a, sent_b


def _only_call(net: Net, index: int) -> str:
    relay = net.stations[index].relay
    assert relay is not None
    (call_id,) = relay.sessions
    return call_id


def test_call_over_two_hops_carries_rtp_both_ways_and_bye_releases_ports() -> None:
    net = Net(3, media=MediaConfig())
    alice, bob = _setup(net)
    last = len(net.stations) - 1
    call = alice.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1",
                                                       rtp_port=ALICE_RTP, session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(last, BOB_PORT), IncomingCall)))
    incoming = of_kind(net.events(last, BOB_PORT), IncomingCall)[0]
    # Bob is offered his own gateway's call port, not Alice's address.
    assert incoming.offer is not None
    assert incoming.offer.connection is not None
    assert incoming.offer.connection.address == f"127.0.0.{10 + last}"
    _answer(bob, incoming, BOB_RTP)
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallEstablished)))
    est = of_kind(net.events(0, ALICE_PORT), CallEstablished)[0]
    assert est.remote_sdp is not None and est.remote_sdp.connection is not None
    assert est.remote_sdp.connection.address == "127.0.0.10"
    call_id = _only_call(net, 0)
    assert _only_call(net, last) == call_id
    assert net.stations[1].relay is not None and not net.stations[1].relay.sessions
    sent_a, sent_b = exchange_rtp(net, call_id, 0, last)           # 10 s each way
    at_bob, at_alice = net.stations[last].to_clients, net.stations[0].to_clients
    assert [p.data for p in at_bob] == sent_a
    assert [p.data for p in at_alice] == sent_b
    assert {p.dst for p in at_bob} == {("127.0.0.1", BOB_RTP)}
    assert {p.dst for p in at_alice} == {("127.0.0.1", ALICE_RTP)}
    # A re-INVITE (hold) passes the hook again: same call, same ports, media still flows.
    ports_before = {i: st.relay.sessions[call_id].legs[0].ports for i, st in
                    enumerate(net.stations) if st.relay is not None and st.relay.sessions}
    alice.hold(call)
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallUpdated)))
    assert {i: st.relay.sessions[call_id].legs[0].ports for i, st in
            enumerate(net.stations) if st.relay is not None and st.relay.sessions} == ports_before
    assert net.client_media(last, call_id, sent_b[0])
    net.run_for(0.5)
    assert net.stations[0].to_clients[-1].data == sent_b[0]
    alice.bye(call)
    net.run_until(lambda: bool(of_kind(net.events(last, BOB_PORT), CallEnded))
                  and bool(of_kind(net.events(0, ALICE_PORT), CallEnded)))
    for index in (0, last):
        relay = net.stations[index].relay
        assert relay is not None
        assert not relay.sessions and relay.counters["calls_ended_hangup"] == 1
        assert not relay.allocator._held                     # type: ignore[attr-defined]
    assert not net.client_media(0, call_id, sent_a[0])      # no session: dropped


def test_call_slots_exhausted_is_503_and_the_caller_side_is_released() -> None:
    net = Net(2, media=MediaConfig(max_calls=1))
    alice, bob = _setup(net)
    first = alice.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1",
                                                        rtp_port=ALICE_RTP, session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(1, BOB_PORT), IncomingCall)))
    _answer(bob, of_kind(net.events(1, BOB_PORT), IncomingCall)[0], BOB_RTP)
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallEstablished)))
    carol = registered(net, 0, 5074, "carol")
    carol.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1", rtp_port=4100,
                                                 session_id=3))
    # Carol's own gateway refuses first (one call slot, Alice holds it): 503 at once.
    net.run_until(lambda: bool(of_kind(net.events(0, 5074), CallEnded)))
    (ended,) = of_kind(net.events(0, 5074), CallEnded)
    assert ended.status == 503
    assert net.stations[0].gw.counters["sdp_refused_media_exhausted"] == 1
    assert len(of_kind(net.events(1, BOB_PORT), IncomingCall)) == 1
    alice.bye(first)
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallEnded)))
    assert all(st.relay is not None and not st.relay.sessions for st in net.stations)


def test_far_gateway_out_of_slots_answers_503_and_the_near_side_is_released() -> None:
    net = Net(3, media=MediaConfig(max_calls=1))
    alice, _bob = _setup(net)
    eve = registered(net, 1, 5078, "eve")
    dave = registered(net, 2, 5076, "dave")
    net.run_until(lambda: bool(net.stations[2].node.table.lookup(f"sip:eve@{DOMAIN}")))
    # Dave (node 2) calls Eve (node 1) and she answers: node 2's one call slot is taken
    # (an offer still ringing takes none: ports are allocated with the answer, issue 8).
    first = dave.invite(f"sip:eve@{DOMAIN}", make_offer(address="127.0.0.1", rtp_port=4200,
                                                       session_id=4))
    net.run_until(lambda: bool(of_kind(net.events(1, 5078), IncomingCall)))
    _answer(eve, of_kind(net.events(1, 5078), IncomingCall)[0], 4300)
    net.run_until(lambda: bool(of_kind(net.events(2, 5076), CallEstablished)))
    alice.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1", rtp_port=ALICE_RTP,
                                                 session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallEnded)))
    assert of_kind(net.events(0, ALICE_PORT), CallEnded)[0].status == 503
    assert not of_kind(net.events(2, BOB_PORT), IncomingCall)
    assert net.stations[2].gw.counters["sdp_refused_media_exhausted"] == 1
    relay0 = net.stations[0].relay
    assert relay0 is not None and not relay0.sessions        # the near side was released
    dave.bye(first)
    net.run_until(lambda: bool(of_kind(net.events(2, 5076), CallEnded)))
    net.run_for(0.5)
    assert all(st.relay is not None and not st.relay.sessions for st in net.stations)


def test_cancel_releases_the_media_of_both_gateways() -> None:
    net = Net(3, media=MediaConfig())
    alice, _bob = _setup(net)
    call = alice.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1",
                                                       rtp_port=ALICE_RTP, session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallRinging)))
    assert net.stations[0].relay is not None and net.stations[0].relay.sessions
    assert net.stations[2].relay is not None and net.stations[2].relay.sessions
    alice.cancel(call)
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallEnded)))
    net.run_for(1.0)
    assert not net.stations[0].relay.sessions and not net.stations[2].relay.sessions


def _raw_invite(call_id: str, port: int, body: bytes, user: str = "raw") -> bytes:
    head = (f"INVITE sip:bob@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag=r1\r\nTo: <sip:bob@{DOMAIN}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _responses(net: Net, index: int, port: int) -> list[SipResponse]:
    out = []
    for dest, data in net.stations[index].unclaimed:
        message = parse_message_untrusted(data)
        if dest == ("127.0.0.1", port) and isinstance(message, SipResponse):
            out.append(message)
    return out


def test_bad_client_sdp_is_400_and_sdp_without_media_key_from_the_mesh_is_488() -> None:
    net = Net(2, media=MediaConfig())
    _setup(net)
    raw: Address = ("127.0.0.1", 5090)
    net.stations[0].sip.receive_sip(_raw_invite("bad-sdp", raw[1], b"not sdp\r\n"), raw,
                                    net.now)
    net.run_for(0.5)
    assert [r.status for r in _responses(net, 0, raw[1])] == [400]
    assert any(k.startswith("sdp_refused_") for k in net.stations[0].gw.counters)
    # A node without the media relay sends the client's SDP as is: no key, no nonce.
    plain = Net(2, media=MediaConfig(), media_at={1})
    _setup(plain)
    body = client_sdp("127.0.0.1", ALICE_RTP)
    plain.stations[0].sip.receive_sip(_raw_invite("no-key", raw[1], body), raw, plain.now)
    plain.run_for(0.5)
    statuses = [r.status for r in _responses(plain, 0, raw[1])]
    assert statuses[-1] == 488 and 100 in statuses
    assert any(k.startswith("sdp_refused_") for k in plain.stations[1].gw.counters)
    relay1 = plain.stations[1].relay
    assert relay1 is not None and not relay1.sessions


def test_early_media_183_with_sdp_is_rewritten_and_carries_rtp_before_the_answer() -> None:
    net = Net(2, media=MediaConfig())
    alice, _bob = _setup(net)
    net.stations[1].uas.pop(("127.0.0.1", BOB_PORT))       # bob answers by hand (raw)
    alice.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1", rtp_port=ALICE_RTP,
                                                 session_id=1))
    net.run_until(lambda: any(isinstance(parse_message_untrusted(d), SipRequest)
                              for _a, d in net.stations[1].unclaimed))
    invite = parse_message_untrusted(net.stations[1].unclaimed[0][1])
    assert isinstance(invite, SipRequest) and invite.method == "INVITE"
    offer = parse_sdp_untrusted(invite.body)
    assert offer.connection is not None and offer.connection.address == "127.0.0.11"
    early = build_response(invite, 183, to_tag="b1", body=client_sdp("127.0.0.1", BOB_RTP),
                           content_type="application/sdp")
    net.stations[1].sip.receive_sip(early.serialize(), ("127.0.0.1", BOB_PORT), net.now)
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallRinging)))
    assert of_kind(net.events(0, ALICE_PORT), CallRinging)[0].status == 183
    call_id = _only_call(net, 0)
    relay0 = net.stations[0].relay
    assert relay0 is not None and relay0.sessions[call_id].legs
    packets = [rtp_packet(seq, 0xB0B) for seq in range(20)]
    for packet in packets:
        assert net.client_media(1, call_id, packet)
        net.run_for(PACKET_INTERVAL_S)
    net.run_for(0.5)
    assert [p.data for p in net.stations[0].to_clients] == packets
    final = build_response(invite, 486, to_tag="b1")
    net.stations[1].sip.receive_sip(final.serialize(), ("127.0.0.1", BOB_PORT), net.now)
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), RequestFailed))
                  or bool(of_kind(net.events(0, ALICE_PORT), CallEnded)))
    net.run_for(0.5)
    assert all(st.relay is not None and not st.relay.sessions for st in net.stations)
