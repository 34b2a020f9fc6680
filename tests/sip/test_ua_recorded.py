"""Requests recorded once from real clients (baresip 1.0.0, linphonec 5.1.65, SIPp 3.6.1;
see tests/sip/vectors/recorded/record.py) parse, and a UA core handles them."""

from __future__ import annotations

import pathlib
import random

import pytest

from meshcomm.sip.message import SipRequest, SipResponse, parse_message_untrusted
from meshcomm.sip.sdp import AudioCodec, NotAcceptable, answer_offer
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import (
    IncomingCall,
    IncomingMessage,
    IncomingRegister,
    IncomingSubscribe,
    UaConfig,
    UaEvent,
)

RECORDED = pathlib.Path(__file__).parent / "vectors" / "recorded"
FILES = sorted(RECORDED.glob("*.sip"))
SOURCE = ("127.0.0.1", 40000)


def test_every_client_is_represented() -> None:
    clients = {path.name.split("-")[0] for path in FILES}
    assert clients == {"baresip", "linphone", "sipp"}
    methods = {path.stem.split("-")[-1] for path in FILES}
    assert {"REGISTER", "INVITE", "ACK", "BYE", "MESSAGE", "SUBSCRIBE"} <= methods


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_recorded_request_parses(path: pathlib.Path) -> None:
    message = parse_message_untrusted(path.read_bytes())
    assert isinstance(message, SipRequest)
    assert message.method == path.stem.split("-")[-1]
    assert message.defects == ()
    assert message.top_via.branch is not None and message.top_via.branch.startswith("z9hG4bK")
    assert message.from_addr.tag is not None
    assert message.cseq.method == message.method
    assert parse_message_untrusted(message.serialize()) == message


def feed(path: pathlib.Path) -> tuple[list[SipResponse], list[UaEvent]]:
    message = parse_message_untrusted(path.read_bytes())
    assert isinstance(message, SipRequest)
    user = message.uri.user or "bob"
    ua = UserAgent(UaConfig(aor=f"sip:{user}@127.0.0.1", local_host="127.0.0.1",
                            local_port=5060), random.Random(3))
    ua.receive(path.read_bytes(), SOURCE, 0.0)
    events = list(iter(ua.next_event, None))
    sent = [parse_message_untrusted(d.data) for d in ua.to_send(0.0)]
    return [m for m in sent if isinstance(m, SipResponse)], events


@pytest.mark.parametrize("path", [p for p in FILES if p.stem.endswith("INVITE")],
                         ids=lambda p: p.name)
def test_recorded_invites_are_offered_and_answerable(path: pathlib.Path) -> None:
    responses, events = feed(path)
    assert [r.status for r in responses] == [100, 180]
    (call,) = [e for e in events if isinstance(e, IncomingCall)]
    assert call.offer is not None
    result = answer_offer(call.offer, address="127.0.0.1", rtp_port=4000, session_id=1)
    assert not isinstance(result, NotAcceptable)
    expected = AudioCodec.PCMU if path.name.startswith("sipp") else AudioCodec.OPUS
    assert result[1].codec is expected


@pytest.mark.parametrize("path", [p for p in FILES if p.stem.endswith("REGISTER")],
                         ids=lambda p: p.name)
def test_recorded_registers_reach_the_application(path: pathlib.Path) -> None:
    responses, events = feed(path)
    (reg,) = [e for e in events if isinstance(e, IncomingRegister)]
    assert reg.contacts and reg.contacts[0].uri.host == "127.0.0.1"
    assert responses == []                      # the application answers


def test_recorded_message_and_subscribe() -> None:
    responses, events = feed(RECORDED / "baresip-03-MESSAGE.sip")
    assert [r.status for r in responses] == [200]
    (msg,) = [e for e in events if isinstance(e, IncomingMessage)]
    assert msg.body == b"hello from baresip"
    responses, events = feed(RECORDED / "baresip-05-SUBSCRIBE.sip")
    assert [r.status for r in responses] == [200]
    (sub,) = [e for e in events if isinstance(e, IncomingSubscribe)]
    assert sub.event == "presence" and sub.expires_s == 600


@pytest.mark.parametrize("path", [p for p in FILES if p.stem.endswith(("BYE", "ACK"))],
                         ids=lambda p: p.name)
def test_recorded_in_dialog_requests_without_dialog(path: pathlib.Path) -> None:
    responses, _ = feed(path)
    expected = [] if path.stem.endswith("ACK") else [481]   # §12.2.2
    assert [r.status for r in responses] == expected
