"""Answers salvaged from requests the parser refused (meshcomm/sip/salvage.py)."""

from __future__ import annotations

import pathlib

from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.sip.message import parse_message_untrusted
from meshcomm.sip.salvage import (
    MAX_SALVAGE_BYTES,
    MAX_SALVAGED_VALUE_CHARS,
    MAX_SALVAGED_VIAS,
    error_response_untrusted,
)

VECTORS = pathlib.Path(__file__).parent / "vectors"
ERROR = DecodeError("test", status_hint=400)


def _request(extra: str = "", via: str = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKs1") -> bytes:
    return (f"OPTIONS sip:x@example.com SIP/2.0\r\nVia: {via}\r\n{extra}"
            "From: <sip:a@example.com>;tag=a\r\nTo: <sip:x@example.com>\r\n"
            "CSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def test_missing_call_id_is_answered_with_what_there_is() -> None:
    answer = error_response_untrusted(_request(), ERROR, "t1")
    assert answer is not None
    response = parse_message_untrusted(answer.replace(b"Content-Length", b"Call-ID: x\r\n"
                                                                          b"Content-Length"))
    assert answer.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert response.get_header("To") == "<sip:x@example.com>;tag=t1"
    assert response.cseq.number == 7 and response.top_via.branch == "z9hG4bKs1"
    assert b"Call-ID" not in answer


def test_nothing_for_responses_acks_or_requests_without_via() -> None:
    assert error_response_untrusted(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", ERROR, "t") is None
    ack = _request().replace(b"OPTIONS sip", b"ACK sip", 1)
    assert error_response_untrusted(ack, ERROR, "t") is None
    no_via = _request().replace(b"Via: ", b"X-Via: ", 1)
    assert error_response_untrusted(no_via, ERROR, "t") is None


def test_unknown_hint_is_400_and_version_and_size_hints_are_kept() -> None:
    for hint, status in ((505, b"505"), (513, b"513"), (299, b"400"), (603, b"400")):
        answer = error_response_untrusted(_request(), DecodeError("x", status_hint=hint), "t")
        assert answer is not None and answer.split(b" ")[1] == status


def test_echo_is_bounded() -> None:
    vias = ", ".join(f"SIP/2.0/UDP 192.0.2.1:{5000 + i};branch=z9hG4bK{i}" for i in range(200))
    long_from = "From: <sip:" + "a" * (MAX_SALVAGED_VALUE_CHARS + 10) + "@x>\r\n"
    answer = error_response_untrusted(_request(long_from, via=vias), ERROR, "t")
    assert answer is not None
    assert answer.count(b"\r\nVia: ") == MAX_SALVAGED_VIAS
    assert b"aaaa" not in answer                 # the overlong From is left out
    big = _request(extra="X-Pad: " + "p" * (4 * MAX_SALVAGE_BYTES) + "\r\n")
    assert error_response_untrusted(big, ERROR, "t") is not None     # read from the head


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from([400, 505, 513]))
def test_any_bytes_give_none_or_a_bounded_answer(data: bytes, hint: int) -> None:
    answer = error_response_untrusted(data, DecodeError("x", status_hint=hint), "t")
    if answer is not None:
        assert answer.startswith(b"SIP/2.0 ") and b"\r\nVia: " in answer
        assert len(answer) <= len(data) + 200


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(VECTORS.glob("rfc*/*.dat"))), st.integers(1, 400))
def test_truncated_vectors_never_raise(path: pathlib.Path, cut: int) -> None:
    data = path.read_bytes()[:cut]
    error_response_untrusted(data, ERROR, "t")
