"""Inputs found by fuzzing (tools/fuzz) that broke a SIP core's contract."""

from __future__ import annotations

import random

import pytest

from meshcomm.sip.sdp import parse_sdp_untrusted
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import CallEstablished, UaConfig

PROXY = ("127.0.0.1", 5060)
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def calling_ua() -> tuple[UserAgent, bytes]:
    ua = UserAgent(UaConfig(aor="sip:alice@incident.local", local_host="127.0.0.1",
                            local_port=5080, outbound_proxy=PROXY), random.Random(11))
    ua.invite("sip:bob@incident.local", parse_sdp_untrusted(SDP))
    (invite,) = [d.data for d in ua.to_send(0.0)]
    return ua, invite


def answer(invite: bytes, status: str, contact: str, body: bytes = b"") -> bytes:
    lines = [f"SIP/2.0 {status}"]
    for line in invite.split(b"\r\n\r\n")[0].decode().split("\r\n")[1:]:
        name = line.split(":", 1)[0].lower()
        if name in ("via", "from", "call-id", "cseq"):
            lines.append(line)
        elif name == "to":
            lines.append(line + ";tag=callee")
    lines += [f"Contact: {contact}", "Content-Type: application/sdp",
              f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize("status", ["180 Ringing", "200 OK"])
def test_answer_with_malformed_contact_is_counted_not_raised(status: str) -> None:
    """Contact is parsed only when the dialog is built (after the transaction layer took
    the response): its DecodeError escaped UserAgent.receive (fuzz target ua_receive)."""
    ua, invite = calling_ua()
    ua.receive(answer(invite, status, "<sip:bob@127.0.0.1:5070:70>", SDP), PROXY, 0.2)
    assert ua.counters.get("undecodable_malformed") == 1
    ua.to_send(0.3)
    # The call goes on: a well-formed 200 OK still establishes it.
    ua.receive(answer(invite, "200 OK", "<sip:bob@127.0.0.1:5070>", SDP), PROXY, 0.4)
    events = []
    while (event := ua.next_event()) is not None:
        events.append(event)
    assert any(isinstance(e, CallEstablished) for e in events)


def rfc2543_options(to_tag: str, version: str = "SIP/2.0") -> bytes:
    return (f"OPTIONS sip:alice@incident.local {version}\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=old-style-1\r\n"
            f"From: <sip:bob@incident.local>;tag=fb\r\nTo: <sip:alice@incident.local>{to_tag}\r\n"
            f"Call-ID: x1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def test_505_answer_colliding_with_an_rfc2543_transaction_is_counted_not_raised() -> None:
    """RFC 2543 transactions share a key when only the To tag differs; the 505 answer to a
    wrong-version request tried to create a second one and LocalProtocolError escaped
    UserAgent.receive (fuzz target ua_receive)."""
    ua, _invite = calling_ua()
    ua.receive(rfc2543_options(""), PROXY, 0.2)
    ua.receive(rfc2543_options(";tag=other", "SIP/4.0"), PROXY, 0.3)
    assert ua.counters.get("undecodable_version") == 1
    assert ua.counters.get("server_tx_refused") == 1
