"""Hypothesis properties of the SIP message codec (issue 3 "done when")."""

from __future__ import annotations

import contextlib
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.sip import (
    MAX_MESSAGE_BYTES,
    SipRequest,
    SipResponse,
    parse_message_untrusted,
    parse_name_addr_untrusted,
    parse_via_untrusted,
)
from tests.sip.strategies import messages, name_addrs, vias

Msg = SipRequest | SipResponse
VECTORS = sorted((pathlib.Path(__file__).parent / "vectors").glob("rfc*/*.dat"))
SEEDS = [p.read_bytes() for p in VECTORS]


def _parse_or_error(data: bytes) -> Msg | None:
    try:
        msg = parse_message_untrusted(data)
    except DecodeError:
        return None
    # Whatever parses: mandatory accessors work and the canonical form reparses equal.
    assert msg.vias and msg.call_id and msg.cseq and msg.from_addr and msg.to_addr
    assert parse_message_untrusted(msg.serialize()) == msg
    return msg


@given(messages)
def test_serializer_output_parses_back_equal(msg: Msg) -> None:
    data = msg.serialize()
    again = parse_message_untrusted(data)
    assert again == msg
    assert again.serialize() == data
    assert again.get_header("Content-Length") == str(len(msg.body))
    assert again.vias and again.from_addr == parse_name_addr_untrusted(msg.header("From"))


@given(st.binary(max_size=512))
def test_any_bytes_give_message_or_decode_error(data: bytes) -> None:
    _parse_or_error(data)


@given(st.sampled_from(SEEDS), st.data())
@settings(max_examples=300)
def test_mutated_vectors_give_message_or_decode_error(seed: bytes, data: st.DataObject) -> None:
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(buf)))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif buf and pos < len(buf):
            if op == "flip":
                buf[pos] = data.draw(st.integers(0, 255))
            else:
                del buf[pos]
    _parse_or_error(bytes(buf))


@given(messages)
@settings(max_examples=25)
def test_every_prefix_is_an_error_or_a_shorter_message(msg: Msg) -> None:
    data = msg.serialize()
    for size in range(len(data)):
        # With Content-Length present every proper prefix lacks octets: always an error.
        with pytest.raises(DecodeError):
            parse_message_untrusted(data[:size])
    assert parse_message_untrusted(data) == msg


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_vector_prefixes_never_crash(path: pathlib.Path) -> None:
    data = path.read_bytes()
    for size in range(len(data)):
        _parse_or_error(data[:size])


def test_prefix_without_content_length_is_a_shorter_body() -> None:
    """RFC 3261 §18.3: a datagram without Content-Length carries the rest as its body."""
    data = next(p for p in VECTORS if p.stem == "inv2543").read_bytes()
    body_start = data.index(b"\r\n\r\n") + 4
    for size in range(body_start, len(data) + 1):
        msg = parse_message_untrusted(data[:size])
        assert msg.body == data[body_start:size]
        assert msg.get_header("Content-Length") == str(size - body_start)


@given(messages, st.binary(min_size=1, max_size=64))
def test_trailing_octets_after_content_length_are_ignored(msg: Msg, garbage: bytes) -> None:
    assert parse_message_untrusted(msg.serialize() + garbage) == msg


@given(messages)
@settings(max_examples=25)
def test_short_body_is_an_error(msg: Msg) -> None:
    data = msg.serialize()
    if msg.body:
        with pytest.raises(DecodeError):
            parse_message_untrusted(data[:-1])


def test_oversized_inputs() -> None:
    msg = parse_message_untrusted(next(p for p in VECTORS if p.stem == "wsinv").read_bytes())
    with pytest.raises(DecodeError) as info:
        parse_message_untrusted(msg.serialize() + b"x" * MAX_MESSAGE_BYTES)
    assert info.value.status_hint == 513
    long_line = msg.with_header("X-Long", "a" * 9000).serialize()
    with pytest.raises(DecodeError):
        parse_message_untrusted(long_line)
    many = msg
    for i in range(300):
        many = many.with_header("X-N", str(i))
    with pytest.raises(DecodeError):
        parse_message_untrusted(many.serialize())


@given(name_addrs)
def test_name_addr_roundtrip(value: object) -> None:
    assert parse_name_addr_untrusted(str(value)) == value


@given(vias)
def test_via_roundtrip(value: object) -> None:
    assert parse_via_untrusted(str(value)) == value


@given(st.text(max_size=120))
def test_name_addr_and_via_any_text(text: str) -> None:
    for parse in (parse_name_addr_untrusted, parse_via_untrusted):
        with contextlib.suppress(DecodeError):
            parse(text)
