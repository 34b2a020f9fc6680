"""RFC 4475 / RFC 5118 torture vectors fed to a real UA core: the responses it sends must
match the verdict table written with the message layer (tests/sip/torture_table.py)."""

from __future__ import annotations

import pathlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.sip.message import SipResponse, parse_message_untrusted
from meshcomm.sip.sdp import NotAcceptable, answer_offer
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import IncomingCall, IncomingRegister, UaConfig, UaEvent
from tests.sip.torture_table import TORTURE_TABLE, Kind

VECTORS = pathlib.Path(__file__).parent / "vectors"
SOURCE = ("192.0.2.99", 5060)
#: Where this UA core knowingly answers differently from the table, and why.
DEVIATIONS: dict[str, tuple[int, str]] = {
    "rfc4475/regaut01": (200, "the UA core hands REGISTER to the application (the mesh is the "
                              "registrar, no digest authentication); the test app accepts"),
}
ANSWERED = [name for name, v in TORTURE_TABLE.items() if v.kind is not Kind.PARSES]


def run_vector(data: bytes) -> tuple[list[SipResponse], list[UaEvent]]:
    ua = UserAgent(UaConfig(aor="sip:user@example.com", local_host="192.0.2.1",
                            local_port=5060), random.Random(1))
    events: list[UaEvent] = []
    ua.receive(data, SOURCE, 0.0)
    while (event := ua.next_event()) is not None:
        events.append(event)
        if isinstance(event, IncomingCall) and event.offer is not None:
            result = answer_offer(event.offer, address="192.0.2.1", rtp_port=4000,
                                  session_id=1)
            assert not isinstance(result, NotAcceptable)
            ua.answer(event.call, result[0])
        elif isinstance(event, IncomingRegister):
            ua.accept_register(event.request, 600)
    sent = [answer_of(d.data) for d in ua.to_send(0.0)]
    assert all(isinstance(m, SipResponse) for m in sent), "a UAS only answers here"
    return [m for m in sent if isinstance(m, SipResponse)], events


def answer_of(data: bytes) -> SipResponse:
    """The answer as sent; one that echoes headers our parser refuses (a salvaged 400 to a
    malformed request) is read from its status line, with the Via it carries."""
    try:
        message = parse_message_untrusted(data)
    except DecodeError:
        head = data.split(b"\r\n\r\n")[0].decode("utf-8", "surrogateescape").split("\r\n")
        version, code, reason = head[0].split(" ", 2)
        assert version == "SIP/2.0"
        vias = [line.partition(":")[2].strip() for line in head[1:]
                if line.lower().startswith(("via:", "v:"))]
        return SipResponse(int(code), reason, tuple(("Via", v) for v in vias))
    assert isinstance(message, SipResponse)
    return message


@pytest.mark.parametrize("name", ANSWERED)
def test_ua_answers_as_the_table_says(name: str) -> None:
    verdict = TORTURE_TABLE[name]
    responses, _ = run_vector((VECTORS / f"{name}.dat").read_bytes())
    finals = [r.status for r in responses if r.status >= 200]
    expected = DEVIATIONS[name][0] if name in DEVIATIONS else verdict.status
    if expected is None:
        assert responses == [], f"{name}: nothing may be sent ({verdict.why})"
        return
    assert finals == [expected], f"{name}: {verdict.why}; got {finals}"
    for response in responses:    # every answer is addressed back along the top Via
        if verdict.kind is Kind.DECODE_ERROR:
            assert response.header_values("Via"), f"{name}: the request's Via is echoed"
            continue
        assert response.top_via.received == SOURCE[0] or response.top_via.host == SOURCE[0]


def test_specific_error_headers() -> None:
    responses, _ = run_vector((VECTORS / "rfc4475/bext01.dat").read_bytes())
    unsupported = responses[-1].get_header("Unsupported") or ""
    assert unsupported == "nothingSupportsThis, nothingSupportsThisEither"
    responses, _ = run_vector((VECTORS / "rfc4475/invut.dat").read_bytes())
    assert responses[-1].get_header("Accept") == "application/sdp"


def test_inv2543_transaction_matched_by_rfc2543_rules() -> None:
    data = (VECTORS / "rfc4475/inv2543.dat").read_bytes()
    ua = UserAgent(UaConfig(aor="sip:user@example.com", local_host="192.0.2.1",
                            local_port=5060), random.Random(1))
    ua.receive(data, SOURCE, 0.0)
    first = ua.to_send(0.0)
    ua.receive(data, SOURCE, 0.5)           # retransmission: absorbed, provisional re-sent
    again = ua.to_send(0.5)
    assert len(again) == 1 and again[0].data == first[-1].data
    assert ua.counters.get("server_tx_refused") is None
    assert sum(1 for e in iter(ua.next_event, None) if isinstance(e, IncomingCall)) == 1


SEEDS = sorted((VECTORS / "recorded").glob("*.sip")) + sorted(VECTORS.glob("rfc*/*.dat"))


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)),
                                        max_size=6),
       st.integers(0, 4000), st.booleans())
def test_mutated_messages_never_crash_the_ua(path: pathlib.Path,
                                             flips: list[tuple[int, int]], cut: int,
                                             twice: bool) -> None:
    data = bytearray(path.read_bytes())
    for index, value in flips:
        if data:
            data[index % len(data)] = value
    if cut and cut < len(data):
        data = data[:cut]
    ua = UserAgent(UaConfig(aor="sip:user@example.com", local_host="192.0.2.1",
                            local_port=5060), random.Random(1))
    for attempt in range(2 if twice else 1):
        ua.receive(bytes(data), SOURCE, float(attempt))
        ua.to_send(float(attempt))
        while ua.next_event() is not None:
            pass
    ua.on_timer(1000.0)
    ua.to_send(1000.0)
