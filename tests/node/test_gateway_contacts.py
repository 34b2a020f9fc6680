"""Clients that cut corners (issue 8 item 4), in the in-memory mesh: SIPp's built-in
``-sn uac`` (addresses ``sip:service@<gateway>``, sends ACK and BYE to that same URI with no
Route) and ``-sn uas`` (no Record-Route in its answers) complete calls across 3 hops;
stock UAs reach a callee that ignores Record-Route; registered contacts that name hosts
nobody resolves are reached at the REGISTER's source address; the tables are bounded."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable

from meshcomm.media.relay import MediaConfig
from meshcomm.node.gateway.contacts import (
    MAX_DIALOGS_PER_CLIENT,
    MAX_TOKENS_PER_CLIENT,
    ContactMap,
    reachable_address,
)
from meshcomm.sip.message import SipRequest, SipResponse, parse_message_untrusted
from meshcomm.sip.sdp import NotAcceptable, answer_offer, make_offer
from meshcomm.sip.ua_events import CallEnded, CallEndReason, CallEstablished, IncomingCall
from meshcomm.sip.uri import parse_uri_untrusted
from tests.node.gateway_net import DOMAIN, GW_ADDR, Net, of_kind, registered

UAC = ("127.0.0.1", 5080)
UAS = ("127.0.0.1", 5090)
SDP = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
       "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _sipp_uac(method: str, call: int, *, to_tag: str | None = None, cseq: int = 1,
              sdp: bool = False) -> bytes:
    """What SIPp's built-in uac sends (its scenario text, with ``-s service``)."""
    body = SDP if sdp else ""
    to = f"service <sip:service@127.0.0.1:5060>{f';tag={to_tag}' if to_tag else ''}"
    return (f"{method} sip:service@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-{call}-{cseq}-{method}\r\n"
            f"From: sipp <sip:sipp@127.0.0.1:5080>;tag={call}SIPpTag00{call}\r\n"
            f"To: {to}\r\nCall-ID: {call}-sipp@127.0.0.1\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: sip:sipp@127.0.0.1:5080\r\nMax-Forwards: 70\r\n"
            f"Subject: Performance Test\r\n"
            + ("Content-Type: application/sdp\r\n" if sdp else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def _sipp_uas_answer(request: SipRequest, status: int, reason: str) -> bytes:
    """What SIPp's built-in uas answers: Via/From/To/Call-ID/CSeq copied, its own tag and
    Contact, and no Record-Route."""
    vias = "".join(f"Via: {v}\r\n" for v in request.header_values("Via"))
    to = request.header("To")
    if ";tag=" not in to:
        to += ";tag=uastag1"
    body = SDP if request.method == "INVITE" and status == 200 else ""
    return (f"SIP/2.0 {status} {reason}\r\n{vias}From: {request.header('From')}\r\n"
            f"To: {to}\r\nCall-ID: {request.call_id}\r\nCSeq: {request.header('CSeq')}\r\n"
            f"Contact: <sip:127.0.0.1:5090;transport=UDP>\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def _raw_register(net: Net, index: int, src: tuple[str, int], user: str, contact: str) -> None:
    data = (f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK-reg-{user}-{src[1]}\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag=r1\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
            f"Call-ID: reg-{user}-{src[1]}\r\nCSeq: 1 REGISTER\r\nContact: <{contact}>\r\n"
            f"Expires: 600\r\nContent-Length: 0\r\n\r\n").encode()
    net.stations[index].sip.receive_sip(data, src, net.now)
    net.run_for(0.2)
    answers = _taken(net, index, src)
    assert any(isinstance(m, SipResponse) and m.status == 200 for m in answers), answers


def _taken(net: Net, index: int, dest: tuple[str, int]) -> list[SipRequest | SipResponse]:
    """Messages the gateway sent to ``dest`` (a raw client), removed from the list."""
    st = net.stations[index]
    mine = [parse_message_untrusted(d) for a, d in st.unclaimed if a == dest]
    st.unclaimed = [(a, d) for a, d in st.unclaimed if a != dest]
    return mine


def _serve_uas(net: Net, index: int, seen: list[SipRequest]) -> None:
    """Answer what reached the SIPp-like uas: 180 + 200 for INVITE, 200 for BYE."""
    for msg in _taken(net, index, UAS):
        if not isinstance(msg, SipRequest):
            continue
        seen.append(msg)
        if msg.method == "INVITE":
            for status, reason in ((180, "Ringing"), (200, "OK")):
                net.stations[index].sip.receive_sip(_sipp_uas_answer(msg, status, reason),
                                                    UAS, net.now)
        elif msg.method == "BYE":
            net.stations[index].sip.receive_sip(_sipp_uas_answer(msg, 200, "OK"), UAS,
                                                net.now)


def _serving(net: Net, far: int, seen: list[SipRequest],
             condition: Callable[[], bool]) -> Callable[[], bool]:
    """A run_until condition that first lets the uas answer what reached it."""
    def check() -> bool:
        _serve_uas(net, far, seen)
        return condition()
    return check


def _until_answer(net: Net, far: int, seen: list[SipRequest], method: str,
                  status: int) -> SipResponse:
    got: list[SipResponse] = []

    def answered() -> bool:
        _serve_uas(net, far, seen)
        got.extend(m for m in _taken(net, 0, UAC) if isinstance(m, SipResponse)
                   and m.cseq.method == method and m.status == status)
        return bool(got)

    net.run_until(answered, timeout_s=10.0)
    return got[0]


def _sipp_call(net: Net, far: int, call: int, seen: list[SipRequest]) -> None:
    gw0 = net.stations[0].sip
    gw0.receive_sip(_sipp_uac("INVITE", call, sdp=True), UAC, net.now)
    ok = _until_answer(net, far, seen, "INVITE", 200)
    to_tag = ok.to_addr.tag
    assert to_tag is not None
    gw0.receive_sip(_sipp_uac("ACK", call, to_tag=to_tag), UAC, net.now)
    net.run_until(_serving(net, far, seen, lambda: any(
        m.method == "ACK" and m.call_id == f"{call}-sipp@127.0.0.1" for m in seen)),
        timeout_s=10.0)
    gw0.receive_sip(_sipp_uac("BYE", call, to_tag=to_tag, cseq=2), UAC, net.now)
    _until_answer(net, far, seen, "BYE", 200)


def test_sipp_builtin_uac_calls_builtin_uas_three_hops_away() -> None:
    net = Net(4)
    net.converge()
    _raw_register(net, 3, UAS, "service", "sip:service@127.0.0.1:5090")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:service@{DOMAIN}")))
    seen: list[SipRequest] = []
    for call in range(1, 6):
        _sipp_call(net, 3, call, seen)
    assert Counter(m.method for m in seen) == {"INVITE": 5, "ACK": 5, "BYE": 5}
    invite = next(m for m in seen if m.method == "INVITE")
    # The uas sees a Contact naming its own gateway, encoding the caller's node and token.
    (contact,) = invite.contacts
    assert (contact.uri.host, contact.uri.port) == GW_ADDR
    assert re.fullmatch(rf"{net.stations[0].gw.node_hex}-c[0-9a-f]{{16}}", contact.uri.user or "")
    # ACK and BYE reached the uas at its real contact, though the uac named only the service.
    bye = next(m for m in seen if m.method == "BYE")
    assert (bye.uri.host, bye.uri.port, bye.uri.param("transport")) == ("127.0.0.1", 5090, "UDP")
    # Every dialog is forgotten once its BYE is answered, at both ends.
    assert net.stations[0].gw.contacts.dialog_count == 0
    assert net.stations[3].gw.contacts.dialog_count == 0
    assert net.stations[0].gw.counters["dialog_routed"] >= 10


def test_a_copy_of_an_ack_reaches_the_callee_once() -> None:
    net = Net(3)
    net.converge()
    _raw_register(net, 2, UAS, "service", "sip:service@127.0.0.1:5090")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:service@{DOMAIN}")))
    seen: list[SipRequest] = []
    gw0 = net.stations[0].sip
    gw0.receive_sip(_sipp_uac("INVITE", 1, sdp=True), UAC, net.now)
    ok = _until_answer(net, 2, seen, "INVITE", 200)
    for _ in range(3):     # the uac re-ACKs each 2xx retransmission that reaches it
        gw0.receive_sip(_sipp_uac("ACK", 1, to_tag=ok.to_addr.tag), UAC, net.now)
        net.run_for(0.3)
        _serve_uas(net, 2, seen)
    assert [m.method for m in seen].count("ACK") == 1
    assert net.stations[2].gw.counters["acks_duplicate_absorbed"] == 2
    # The uac vanishes without a BYE: when the call is ended for the media layer (its
    # reclaim), the gateway's dialog goes too.
    assert net.stations[0].gw.contacts.dialog_count == 1
    assert net.stations[2].gw.contacts.dialog_count == 1
    for st in (net.stations[0], net.stations[2]):
        st.gw.end_call(ok.call_id)
        assert st.gw.contacts.dialog_count == 0
    # A 200 the callee retransmits afterwards does not bring the dialog back.
    invite = next(m for m in seen if m.method == "INVITE")
    net.stations[2].sip.receive_sip(_sipp_uas_answer(invite, 200, "OK"), UAS, net.now)
    net.run_for(1.0)
    assert net.stations[0].gw.contacts.dialog_count == 0
    assert net.stations[2].gw.contacts.dialog_count == 0


def test_a_2xx_after_the_call_failed_leaves_no_dialog() -> None:
    net = Net(3)
    net.converge()
    _raw_register(net, 2, UAS, "service", "sip:service@127.0.0.1:5090")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:service@{DOMAIN}")))
    net.stations[0].sip.receive_sip(_sipp_uac("INVITE", 1, sdp=True), UAC, net.now)
    net.run_for(net.stations[0].gw.config.invite_timeout_s + 1.0)   # the callee is silent
    finals = [m.status for m in _taken(net, 0, UAC) if isinstance(m, SipResponse)
              and m.status >= 200]
    assert finals and finals[0] >= 400
    seen: list[SipRequest] = []
    _serve_uas(net, 2, seen)                  # now it answers 180 and 200, too late
    net.run_until(_serving(net, 2, seen, lambda: any(m.method == "BYE" for m in seen)),
                  timeout_s=2.0)
    net.run_for(1.0)
    _serve_uas(net, 2, seen)
    # The caller was told the call failed: its gateway ends the far side (ACK + BYE, as the
    # canceller of a 2xx must) instead of relaying a 2xx to a transaction that failed.
    methods = [m.method for m in seen]
    assert methods[0] == "INVITE" and methods.count("ACK") == 1 and methods.count("BYE") == 1
    assert not [m for m in _taken(net, 0, UAC) if isinstance(m, SipResponse)
                and 200 <= m.status < 300]
    assert net.stations[0].gw.contacts.dialog_count == 0
    assert net.stations[2].gw.contacts.dialog_count == 0


def test_a_2xx_refused_at_the_callers_gateway_ends_the_far_side_at_once() -> None:
    net = Net(3, media=MediaConfig(), media_ports=1)
    net.converge()
    # Alice (node 0) calls Bob (node 1): node 0's one pair of call ports is taken.
    alice = registered(net, 0, 5070, "alice")
    bob = registered(net, 1, 5072, "bob")
    _raw_register(net, 2, UAS, "service", "sip:service@127.0.0.1:5090")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:service@{DOMAIN}"))
                  and bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    alice.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1", rtp_port=4000,
                                                session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(1, 5072), IncomingCall)))
    offer = of_kind(net.events(1, 5072), IncomingCall)[0]
    assert offer.offer is not None
    answer = answer_offer(offer.offer, address="127.0.0.1", rtp_port=6000, session_id=2)
    assert not isinstance(answer, NotAcceptable)
    bob.answer(offer.call, answer[0])
    net.run_until(lambda: bool(of_kind(net.events(0, 5070), CallEstablished)))
    # The SIPp-like uac at node 0 calls the uas at node 2: node 2 answers 200 with SDP,
    # node 0 has no ports left for the answer and answers the uac 503; node 2's side must
    # end now (before: its 200 was retransmitted and its media held until the idle timeout).
    seen: list[SipRequest] = []
    net.stations[0].sip.receive_sip(_sipp_uac("INVITE", 1, sdp=True), UAC, net.now)
    refused = _until_answer(net, 2, seen, "INVITE", 503)
    assert refused.get_header("Retry-After") is not None
    net.run_until(_serving(net, 2, seen, lambda: any(m.method == "BYE" for m in seen)),
                  timeout_s=2.0)
    assert [m.method for m in seen] == ["INVITE", "ACK", "BYE"]
    far = net.stations[2]
    assert far.gw.contacts.dialog_count == 0
    assert far.relay is not None and not far.relay.sessions
    assert net.stations[0].gw.counters["calls_abandoned_far"] == 1


def test_a_2xx_after_the_callers_transaction_is_gone_is_ended_not_relayed() -> None:
    net = Net(3)
    net.converge()
    _raw_register(net, 2, UAS, "service", "sip:service@127.0.0.1:5090")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:service@{DOMAIN}")))
    net.stations[0].sip.receive_sip(_sipp_uac("INVITE", 1, sdp=True), UAC, net.now)
    net.run_for(net.stations[0].gw.config.invite_timeout_s + 20.0)   # state lingered out
    _taken(net, 0, UAC)
    seen: list[SipRequest] = []
    _serve_uas(net, 2, seen)                  # the 200 comes long after the 480
    net.run_until(_serving(net, 2, seen, lambda: any(m.method == "BYE" for m in seen)),
                  timeout_s=2.0)
    assert not [m for m in _taken(net, 0, UAC) if isinstance(m, SipResponse)
                and 200 <= m.status < 300]
    assert net.stations[2].gw.contacts.dialog_count == 0


def test_stock_ua_calls_a_callee_that_ignores_record_route_and_gets_its_bye() -> None:
    net = Net(3)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    _raw_register(net, 2, UAS, "service", "sip:service@127.0.0.1:5090")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:service@{DOMAIN}")))
    seen: list[SipRequest] = []
    call = alice.invite(f"sip:service@{DOMAIN}",
                        make_offer(address="127.0.0.1", rtp_port=4000, session_id=1))
    net.run_until(_serving(net, 2, seen,
                           lambda: bool(of_kind(net.events(0, 5070), CallEstablished))))
    net.run_until(_serving(net, 2, seen, lambda: any(m.method == "ACK" for m in seen)))
    # The uas (no Record-Route) now ends the call: its BYE goes to the Contact it was given
    # (its own gateway), with no Route; it must reach alice three hops away.
    invite = next(m for m in seen if m.method == "INVITE")
    target = invite.contacts[0].uri
    bye = (f"BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-uasbye\r\n"
           f"From: {invite.header('To')};tag=uastag1\r\nTo: {invite.header('From')}\r\n"
           f"Call-ID: {invite.call_id}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\n"
           f"Content-Length: 0\r\n\r\n").encode()
    net.stations[2].sip.receive_sip(bye, UAS, net.now)
    net.run_until(lambda: bool(of_kind(net.events(0, 5070), CallEnded)))
    assert of_kind(net.events(0, 5070), CallEnded)[0].reason is CallEndReason.REMOTE_BYE
    answers = [m for m in _taken(net, 2, UAS) if isinstance(m, SipResponse)]
    assert [m.status for m in answers if m.cseq.method == "BYE"][:1] == [200]
    assert call is not None


def test_unknown_contact_token_is_404_not_a_guess() -> None:
    net = Net(2)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    far = net.stations[1].gw.node_hex
    bye = (f"BYE sip:{far}-c0123456789abcdef@127.0.0.1:5060 SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-guess\r\n"
           f"From: <sip:alice@{DOMAIN}>;tag=a\r\nTo: <sip:x@{DOMAIN}>;tag=b\r\n"
           f"Call-ID: guess\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    net.stations[0].sip.receive_sip(bye.encode(), ("127.0.0.1", 5071), net.now)
    net.run_for(2.0)
    answers = [m for m in _taken(net, 0, ("127.0.0.1", 5071)) if isinstance(m, SipResponse)]
    assert [m.status for m in answers] == [404]
    assert net.stations[1].gw.counters["contact_tokens_unknown"] == 1
    assert alice is not None


def test_register_with_unresolvable_host_is_reached_at_its_source() -> None:
    net = Net(2)
    net.converge()
    src = ("127.0.0.1", 5077)
    _raw_register(net, 1, src, "gw1", "sip:gw1@gw1.example.net:5060")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:gw1@{DOMAIN}")))
    alice = registered(net, 0, 5070, "alice")
    alice.message(f"sip:gw1@{DOMAIN}", "hello")
    net.run_for(2.0)
    st = net.stations[1]
    assert not [a for a, _ in st.unclaimed if a[0] == "gw1.example.net"]
    got = [m for m in _taken(net, 1, src) if isinstance(m, SipRequest)]
    assert [m.method for m in got][:1] == ["MESSAGE"]


def test_reachable_address_rules() -> None:
    uri = parse_uri_untrusted
    assert reachable_address(uri("sip:a@10.0.0.5:5070"), ("10.0.0.5", 40000)) == ("10.0.0.5",
                                                                                  5070)
    assert reachable_address(uri("sip:a@10.0.0.6:5070"), ("10.0.0.5", 40000)) == ("10.0.0.5",
                                                                                  40000)
    assert reachable_address(uri("sip:a@gw1.example.net"), ("10.0.0.5", 41)) == ("10.0.0.5", 41)
    assert reachable_address(uri("sip:a@[::1]:5070"), ("::1", 9)) == ("::1", 5070)


def _map() -> ContactMap:
    return ContactMap(node_hex="00" * 8, local_host="127.0.0.1", local_port=5060,
                      domain=DOMAIN, secret=random.Random(1).randbytes(16), counters=Counter())


def _invite_from(client: tuple[str, int], contact: str, call: int) -> SipRequest:
    data = (f"INVITE sip:bob@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {client[0]}:{client[1]};branch=z9hG4bK-{call}\r\n"
            f"From: <sip:a@{DOMAIN}>;tag=f{call}\r\nTo: <sip:bob@{DOMAIN}>\r\n"
            f"Call-ID: c{call}\r\nCSeq: 1 INVITE\r\nContact: <{contact}>\r\n"
            f"Content-Length: 0\r\n\r\n").encode()
    msg = parse_message_untrusted(data)
    assert isinstance(msg, SipRequest)
    return msg


def test_token_table_has_a_per_client_quota_a_flood_does_not_evict_others() -> None:
    cmap = _map()
    honest = ("127.0.0.1", 5070)
    out = cmap.rewrite(_invite_from(honest, "sip:alice@127.0.0.1:5070", 0), honest, b"\x01" * 32)
    token_uri = out.contacts[0].uri
    assert cmap.client_of(token_uri) is not None
    flooder = ("127.0.0.1", 6666)
    for i in range(10 * MAX_TOKENS_PER_CLIENT):
        cmap.rewrite(_invite_from(flooder, f"sip:x{i}@127.0.0.1:6666", i), flooder,
                     b"\x01" * 32)
    assert len(cmap) == MAX_TOKENS_PER_CLIENT + 1
    found = cmap.client_of(token_uri)
    assert found is not None and found.peer == honest
    # The same contact from the same client keeps its token (retransmissions, re-INVITEs).
    again = cmap.rewrite(_invite_from(honest, "sip:alice@127.0.0.1:5070", 9), honest, b"\x01")
    assert again.contacts[0].uri == token_uri


def test_dialog_table_has_a_per_client_quota() -> None:
    cmap = _map()
    far = "sip:c0123456789abcdef@1111111111111111.mesh"
    client = ("127.0.0.1", 5080)
    for i in range(MAX_DIALOGS_PER_CLIENT + 50):
        invite = _invite_from(client, "sip:sipp@127.0.0.1:5080", i)
        ok = parse_message_untrusted(
            (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-{i}\r\n"
             f"From: <sip:a@{DOMAIN}>;tag=f{i}\r\nTo: <sip:bob@{DOMAIN}>;tag=t{i}\r\n"
             f"Call-ID: c{i}\r\nCSeq: 1 INVITE\r\nContact: <{far}>\r\n"
             f"Content-Length: 0\r\n\r\n").encode())
        assert isinstance(ok, SipResponse)
        cmap.note_answer(invite, ok, b"\x02" * 32, client)
    assert cmap.dialog_count == MAX_DIALOGS_PER_CLIENT
    assert cmap.counters["dialogs_evicted"] == 50
