"""§8.2 request checks of the UA core, one request at a time."""

from __future__ import annotations

import random

import pytest

from meshcomm.sip.build import build_request
from meshcomm.sip.message import NameAddr, SipResponse, Via, parse_message_untrusted
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import BadRequest, UaConfig
from meshcomm.sip.uri import parse_uri_untrusted

U = parse_uri_untrusted
SRC = ("10.0.0.1", 5060)


def new_ua() -> UserAgent:
    return UserAgent(UaConfig(aor="sip:bob@mesh.example", local_host="10.0.0.2",
                              local_port=5060), random.Random(5))


def request(method: str, *, ruri: str = "sip:bob@10.0.0.2", branch: str = "z9hG4bK1",
            to_tag: str | None = None, headers: tuple[tuple[str, str], ...] = (),
            max_forwards: int = 70, cseq: int = 1) -> bytes:
    to = NameAddr(U("sip:bob@mesh.example"), None, (("tag", to_tag),) if to_tag else ())
    return build_request(
        method, U(ruri), from_addr=NameAddr(U("sip:alice@mesh.example"), None, (("tag", "a"),)),
        to_addr=to, call_id="cid-1", cseq=cseq,
        via=Via("UDP", "10.0.0.1", 5060, (("branch", branch),)),
        contact=NameAddr(U("sip:alice@10.0.0.1")), max_forwards=max_forwards,
        extra_headers=headers).serialize()


def answers(ua: UserAgent, data: bytes, now: float = 0.0) -> list[SipResponse]:
    ua.receive(data, SRC, now)
    out = [parse_message_untrusted(d.data) for d in ua.to_send(now)]
    return [m for m in out if isinstance(m, SipResponse)]


@pytest.mark.parametrize("data,status,header", [
    (request("INFO"), 405, "Allow"),
    (request("FROBNICATE"), 501, "Allow"),
    (request("OPTIONS", headers=(("Require", "100rel"),)), 420, "Unsupported"),
    (request("BYE", to_tag="nosuchdialog"), 481, None),
    (request("OPTIONS", ruri="sip:carol@10.0.0.2", max_forwards=0), 483, None),
    (request("SUBSCRIBE", headers=(("Event", "dialog"),)), 489, "Allow-Events"),
    (request("MESSAGE", headers=(("Content-Encoding", "gzip"),)).replace(
        b"Content-Length: 0", b"Content-Length: 2") + b"xx", 415, "Accept-Encoding"),
])
def test_rejections(data: bytes, status: int, header: str | None) -> None:
    ua = new_ua()
    (response,) = answers(ua, data)
    assert response.status == status
    assert response.to_addr.tag is not None
    if header is not None:
        assert response.get_header(header)
    assert isinstance(ua.next_event(), BadRequest)


def test_options_to_us_with_max_forwards_zero_is_answered() -> None:
    (response,) = answers(new_ua(), request("OPTIONS", max_forwards=0))
    assert response.status == 200
    assert "INVITE" in (response.get_header("Allow") or "")
    assert response.top_via.received is None      # sent-by already equals the source


def test_merged_request_gets_482() -> None:
    ua = new_ua()
    first = answers(ua, request("INVITE"))
    assert [r.status for r in first] == [100, 180]
    (merged,) = answers(ua, request("INVITE", branch="z9hG4bK2"), 0.1)  # same From tag/CSeq
    assert merged.status == 482


def test_rport_and_received_are_stamped() -> None:
    ua = new_ua()
    data = request("OPTIONS").replace(b"branch=z9hG4bK1", b"branch=z9hG4bK1;rport")
    ua.receive(data, ("192.0.2.7", 40123), 0.0)
    (dgram,) = ua.to_send(0.0)
    assert dgram.dest == ("192.0.2.7", 40123)     # RFC 3581 symmetric response
    response = parse_message_untrusted(dgram.data)
    assert response.top_via.received == "192.0.2.7" and response.top_via.rport == 40123
