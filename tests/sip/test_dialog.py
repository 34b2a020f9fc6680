"""RFC 3261 §12 dialogs: creation, route sets, strict/loose routing, CSeq rules."""

from __future__ import annotations

import pytest

from meshcomm.errors import LocalProtocolError
from meshcomm.sip.build import build_request, build_response
from meshcomm.sip.dialog import (
    DialogInput,
    DialogState,
    dialog_from_uac,
    dialog_from_uas,
    incoming_dialog_id,
    response_dialog_id,
)
from meshcomm.sip.message import NameAddr, SipRequest, Via, parse_message_untrusted
from meshcomm.sip.uri import parse_uri_untrusted

U = parse_uri_untrusted


def invite(record_routes: tuple[str, ...] = ()) -> SipRequest:
    request = build_request(
        "INVITE", U("sip:bob@biloxi.example"),
        from_addr=NameAddr(U("sip:alice@atlanta.example"), "Alice", (("tag", "a1"),)),
        to_addr=NameAddr(U("sip:bob@biloxi.example")), call_id="c1", cseq=314,
        via=Via("UDP", "10.0.0.1", 5060, (("branch", "z9hG4bKx"),)),
        contact=NameAddr(U("sip:alice@10.0.0.1:5060")))
    for rr in record_routes:
        request = request.with_header("Record-Route", rr)
    return request


def test_uac_dialog_from_2xx_reverses_record_route_and_uses_contact() -> None:
    req = invite(("<sip:p1.example;lr>", "<sip:p2.example;lr>"))
    resp = build_response(req, 200, to_tag="b1", contact=NameAddr(U("sip:bob@10.0.0.2:5070")))
    dialog = dialog_from_uac(req, resp)
    assert dialog.state is DialogState.CONFIRMED and dialog.is_uac
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p2.example;lr", "sip:p1.example;lr"]
    assert str(dialog.remote_target) == "sip:bob@10.0.0.2:5070"
    assert response_dialog_id(resp) == dialog.dialog_id
    bye = dialog.make_request("BYE", via=Via("UDP", "10.0.0.1", 5060, (("branch", "z9hG4bKb"),)),
                              contact=None)
    assert bye.cseq.number == 315 and str(bye.uri) == "sip:bob@10.0.0.2:5070"
    assert [str(r.uri) for r in bye.routes] == ["sip:p2.example;lr", "sip:p1.example;lr"]
    assert bye.from_addr.tag == "a1" and bye.to_addr.tag == "b1"
    ack = dialog.make_request("ACK", via=bye.top_via, contact=None, cseq=314)
    assert ack.cseq.number == 314 and dialog.local_seq == 315
    assert parse_message_untrusted(bye.serialize()) == bye


def test_strict_route_puts_remote_target_last() -> None:
    req = invite(("<sip:strict.example>",))
    resp = build_response(req, 200, to_tag="b1", contact=NameAddr(U("sip:bob@10.0.0.2")))
    dialog = dialog_from_uac(req, resp)
    bye = dialog.make_request("BYE", via=req.top_via, contact=None)
    assert str(bye.uri) == "sip:strict.example"                      # §12.2.1.1
    assert [str(r.uri) for r in bye.routes] == ["sip:bob@10.0.0.2"]
    assert str(dialog.next_hop_uri()) == "sip:strict.example"


def test_early_dialog_from_1xx_then_confirmed() -> None:
    req = invite()
    ringing = build_response(req, 180, to_tag="b1", contact=NameAddr(U("sip:bob@10.0.0.2")))
    dialog = dialog_from_uac(req, ringing)
    assert dialog.state is DialogState.EARLY
    ok = build_response(req, 200, to_tag="b1", contact=NameAddr(U("sip:bob@10.0.0.3")))
    dialog.on_response(req, ok)
    assert dialog.state is DialogState.CONFIRMED
    assert str(dialog.remote_target) == "sip:bob@10.0.0.3"           # target refresh
    assert dialog.on_input(DialogInput.BYE) is DialogState.TERMINATED
    with pytest.raises(LocalProtocolError):
        dialog.make_request("BYE", via=req.top_via, contact=None)


def test_uas_dialog_and_cseq_rules() -> None:
    req = invite(("<sip:p1.example;lr>",))
    dialog = dialog_from_uas(req, "b1", initial_local_seq=7)
    assert incoming_dialog_id(req.with_headers_replaced("To", ["<sip:bob@biloxi.example>;tag=b1"])
                              ) == dialog.dialog_id
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1.example;lr"]   # not reversed
    assert dialog.remote_seq == 314 and str(dialog.remote_target) == "sip:alice@10.0.0.1:5060"
    reinvite = req.with_headers_replaced("CSeq", ["315 INVITE"]).with_headers_replaced(
        "Contact", ["<sip:alice@10.0.0.9>"])
    assert dialog.check_request(reinvite) is None
    assert str(dialog.remote_target) == "sip:alice@10.0.0.9"          # §12.2.2 refresh
    assert dialog.check_request(reinvite) == 500                       # not increasing
    ack = reinvite.with_headers_replaced("CSeq", ["315 ACK"])
    assert dialog.check_request(SipRequest("ACK", ack.uri, ack.headers)) is None
    notify = dialog.make_request("NOTIFY", via=req.top_via, contact=None)
    assert notify.cseq.number == 8 and notify.from_addr.tag == "b1"
    assert notify.to_addr.tag == "a1"
    with pytest.raises(LocalProtocolError):
        dialog.make_request("CANCEL", via=req.top_via, contact=None)


def test_rfc2543_invite_without_contact_targets_from() -> None:
    req = invite().without_header("Contact")
    dialog = dialog_from_uas(req, "b1", initial_local_seq=1)
    assert str(dialog.remote_target) == "sip:alice@atlanta.example"
