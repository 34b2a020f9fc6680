"""Compact SIP (meshcomm.sip.compact): every message comes back byte for byte (torture
vectors, recorded baresip/linphone/SIPp traffic, the gateway's own messages, generated
messages), what the far gateway derives costs a byte, and any bytes expand or raise only
DecodeError within the size bound (garbage, truncation, zip bombs, bad codes)."""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.node.e2e_sip import compact_context
from meshcomm.node.gateway.types import MAX_SIP_MESSAGE_BYTES
from meshcomm.sip.compact import (
    CONTEXT_CODES,
    DEFLATE_WBITS,
    Form,
    Reference,
    UnknownReference,
    compact,
    expand_untrusted,
    reference_words,
)
from meshcomm.sip.compact_dict import STATIC_WORDS, ZDICT
from tests.sip.strategies import requests, responses

VECTORS = pathlib.Path(__file__).parent / "vectors"
A = hashlib.sha256(b"compact-a").digest()
B = hashlib.sha256(b"compact-b").digest()
A_HEX, B_HEX = A.hex()[:16], B.hex()[:16]
CTX_AB = compact_context(A, B)
CTX_BA = compact_context(B, A)
TEXT = ("airtime meshcomm r0 l0 3 " + "x" * 75).encode()
assert len(TEXT) == 100


def _message(text: bytes = TEXT) -> bytes:
    """A MESSAGE as gateway A puts it on the mesh (meshcomm UA client behind it)."""
    return (
        b"MESSAGE sip:n4@incident.local SIP/2.0\r\n"
        + f"Via: SIP/2.0/UDP {A_HEX}.mesh;branch=z9hG4bK692eb462cc16351f\r\n".encode()
        + b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKe133cfc16647f328;rport=5070;"
        b"received=127.0.0.1\r\nMax-Forwards: 69\r\n"
        b"From: <sip:n0@incident.local>;tag=0b66a834925c557a\r\nTo: <sip:n4@incident.local>\r\n"
        b"Call-ID: 626baccfb39304065ecd7eef@127.0.0.1\r\nCSeq: 1 MESSAGE\r\n"
        b"User-Agent: meshcomm/0.1\r\n"
        b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY\r\n"
        + f"Content-Length: {len(text)}\r\n".encode()
        + b"Content-Type: text/plain;charset=utf-8\r\n\r\n" + text)


def _ok(request: bytes) -> bytes:
    """Gateway B's 200 OK to ``request`` (Via, From, To, Call-ID, CSeq copied)."""
    lines = request.partition(b"\r\n\r\n")[0].split(b"\r\n")
    copied = [line for line in lines[1:] if line.split(b":")[0] in (
        b"Via", b"From", b"To", b"Call-ID", b"CSeq")]
    copied = [line + b";tag=a951af6ddaca7127" if line.startswith(b"To:") else line
              for line in copied]
    return (b"SIP/2.0 200 OK\r\n" + b"\r\n".join(copied)
            + b"\r\nUser-Agent: meshcomm/0.1\r\nContent-Length: 0\r\n\r\n")


def _vectors() -> list[pathlib.Path]:
    return sorted(p for p in VECTORS.rglob("*") if p.suffix in (".dat", ".sip"))


def test_there_are_vectors() -> None:
    names = {p.parent.name for p in _vectors()}
    assert {"rfc4475", "rfc5118", "recorded"} <= names and len(_vectors()) > 60


@pytest.mark.parametrize("path", _vectors(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_vectors_round_trip_byte_for_byte(path: pathlib.Path) -> None:
    data = path.read_bytes()[:MAX_SIP_MESSAGE_BYTES]
    for ctx in (CTX_AB, CTX_BA):
        packed = compact(data, ctx)
        assert expand_untrusted(packed, ctx) == data
        assert len(packed) <= len(data) + 1


def test_recorded_client_traffic_gets_shorter() -> None:
    recorded = sorted((VECTORS / "recorded").iterdir())
    total = sum(len(p.read_bytes()) for p in recorded)
    packed = sum(len(compact(p.read_bytes(), CTX_AB)) for p in recorded)
    assert packed < 0.75 * total, (packed, total)


def test_a_gateway_message_and_its_200_ok_are_small() -> None:
    message = _message()
    packed = compact(message, CTX_AB)
    assert expand_untrusted(packed, CTX_AB) == message
    assert len(packed) <= 170 and len(message) > 600, len(packed)
    ok = _ok(message)
    ref = Reference(bytes.fromhex("692eb462cc16351f"), reference_words(message))
    packed_ok = compact(ok, CTX_BA, ref)
    assert packed_ok[0] in (Form.REF, Form.REF_Z)
    assert expand_untrusted(packed_ok, CTX_BA, {ref.ref: ref.words}.get) == ok
    assert len(packed_ok) <= 40, len(packed_ok)
    assert len(compact(ok, CTX_BA)) > len(packed_ok)          # without its request


def test_what_the_far_gateway_derives_costs_one_byte() -> None:
    """The sending gateway's top Via (up to its branch), Max-Forwards 69 and a correct
    Content-Length are one code each; a wrong Content-Length is carried as it is."""
    via = f"\r\nVia: SIP/2.0/UDP {A_HEX}.mesh;branch=z9hG4bK".encode()
    assert compact(b"OPTIONS sip:x SIP/2.0" + via + b"0011223344556677\r\n\r\n",
                   CTX_AB) == bytes([Form.TOKENS, 0x80 + STATIC_WORDS.index("OPTIONS sip:"),
                                     ord("x"), 0x80 + STATIC_WORDS.index(" SIP/2.0"),
                                     CONTEXT_CODES[0], 0x0F + 8]) + bytes.fromhex(
                                         "0011223344556677") + b"\x00"
    assert compact(b"ACK sip:x SIP/2.0\r\nMax-Forwards: 69\r\n\r\n", CTX_AB)[4:] == bytes(
        [0x80 + STATIC_WORDS.index("\r\nMax-Forwards: 69"), 0])
    honest = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 2\r\n\r\nhi"
    lying = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 20\r\n\r\nhi"
    assert len(compact(honest, CTX_AB)) < len(compact(lying, CTX_AB))
    for message in (honest, lying, b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 22\r\n\r\nhi"):
        assert expand_untrusted(compact(message, CTX_AB), CTX_AB) == message


def test_another_nodes_mesh_host_is_carried_not_confused() -> None:
    other = "0123456789abcdef"
    message = (f"BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP {other}.mesh;branch=z9hG4bK0011223344"
               f"556677\r\nRoute: <sip:1.2.3.4;lr;mesh={other}>\r\n\r\n").encode()
    for ctx in (CTX_AB, CTX_BA):
        assert expand_untrusted(compact(message, ctx), ctx) == message
        assert expand_untrusted(compact(message, ctx), CTX_AB if ctx is CTX_BA
                                else CTX_BA) == message     # no context word used


@settings(max_examples=300, deadline=None)
@given(st.one_of(requests(), responses()))
def test_generated_messages_round_trip(message: object) -> None:
    data = message.serialize()  # type: ignore[attr-defined]
    assert expand_untrusted(compact(data, CTX_AB), CTX_AB) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_round_trip(data: bytes) -> None:
    assert expand_untrusted(compact(data, CTX_AB), CTX_AB) == data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3000))
def test_any_compact_input_expands_or_raises_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert len(expand_untrusted(data, CTX_AB, lambda _n: ("\r\nX: y",))) <= (
            MAX_SIP_MESSAGE_BYTES)


def test_truncations_and_bad_codes_raise_decode_error() -> None:
    packed = compact(_message(b"\x00\x01\xff body with control bytes"), CTX_AB)
    assert packed[0] in (Form.TOKENS, Form.TOKENS_Z)
    for n in range(len(packed)):
        with contextlib.suppress(DecodeError):
            expand_untrusted(packed[:n], CTX_AB)
    bad = [b"", b"\x06", b"\xff", bytes([Form.TOKENS, 0x80 + len(STATIC_WORDS)]) + b"\x00",
           bytes([Form.TOKENS, 0x0F, 200, 0]), bytes([Form.TOKENS, 0x01]),
           bytes([Form.TOKENS, 0x02]), bytes([Form.TOKENS, 0x02, 0]),
           bytes([Form.TOKENS, 0x1F, 1, 2]), bytes([Form.TOKENS]) + b"no end",
           bytes([Form.REF, 0]), bytes([Form.REF, 40]) + bytes(40),
           bytes([Form.RAW_Z]) + b"\xff\xff", bytes([Form.TOKENS_Z]) + b"not deflate"]
    for data in bad:
        with pytest.raises(DecodeError):
            expand_untrusted(data, CTX_AB)
    small = compact_context(A, B).__class__(CTX_AB.words[:2], 4096)
    with pytest.raises(DecodeError):
        expand_untrusted(bytes([Form.TOKENS, CONTEXT_CODES[5], 0]), small)


def test_every_one_byte_code_means_what_the_format_says() -> None:
    """Each code byte alone in a head, against the module docstring's table: printable
    ASCII and tab literal, 0x0A CRLF, 0x80+i static word i, context codes their word;
    codes that need an operand or end the head raise on their own."""
    for code in range(256):
        data = bytes([Form.TOKENS, code, 0])
        if code == 0x03:                                     # CRLF Content-Length: 0
            want: bytes | None = b"\r\nContent-Length: 0\r\n\r\n"
        elif code == 0x00:                                   # the end; 0 is the body
            want = b"\r\n\r\n\x00"
        elif code in (0x01, 0x02, 0x0F) or 0x10 <= code <= 0x1F:
            want = None                                      # operand missing: truncated
        elif code == 0x0A:
            want = b"\r\n\r\n\r\n"
        elif code in CONTEXT_CODES:                          # undefined beyond the words
            index = CONTEXT_CODES.index(code)
            want = (CTX_AB.words[index].encode("latin-1") + b"\r\n\r\n"
                    if index < len(CTX_AB.words) else None)
        elif code >= 0x80:
            index = code - 0x80
            want = (STATIC_WORDS[index].encode("latin-1") + b"\r\n\r\n"
                    if index < len(STATIC_WORDS) else None)
        else:
            want = bytes([code]) + b"\r\n\r\n"
        if want is None:
            with pytest.raises(DecodeError):
                expand_untrusted(data, CTX_AB)
        else:
            assert expand_untrusted(data, CTX_AB) == want, hex(code)


def test_a_reference_not_held_is_unknown() -> None:
    message = _message()
    ref = Reference(b"\x01" * 8, reference_words(message))
    packed = compact(_ok(message), CTX_BA, ref)
    with pytest.raises(UnknownReference):
        expand_untrusted(packed, CTX_BA)
    with pytest.raises(UnknownReference):
        expand_untrusted(packed, CTX_BA, lambda _name: None)


def _deflated(data: bytes) -> bytes:
    obj = zlib.compressobj(9, zlib.DEFLATED, DEFLATE_WBITS, zdict=ZDICT)
    return obj.compress(data) + obj.flush()


def test_zip_bombs_and_oversize_stop_at_the_limit() -> None:
    bomb = _deflated(b"A" * (64 * MAX_SIP_MESSAGE_BYTES))
    assert len(bomb) < MAX_SIP_MESSAGE_BYTES // 4
    for form in (Form.RAW_Z, Form.TOKENS_Z):
        with pytest.raises(DecodeError) as info:
            expand_untrusted(bytes([form]) + bomb, CTX_AB)
        assert info.value.reason == "oversize"
    longest = max(STATIC_WORDS, key=len)
    words = bytes([Form.TOKENS]) + bytes([0x80 + STATIC_WORDS.index(longest)]) * 4000 + b"\0"
    with pytest.raises(DecodeError) as info:
        expand_untrusted(words, CTX_AB)
    assert info.value.reason == "oversize"
    lengths = bytes([Form.TOKENS]) + b"\x03" * (MAX_SIP_MESSAGE_BYTES // 4) + b"\0"
    with pytest.raises(DecodeError):
        expand_untrusted(lengths, CTX_AB)
    with pytest.raises(DecodeError):
        expand_untrusted(bytes([Form.RAW]) + bytes(MAX_SIP_MESSAGE_BYTES + 1), CTX_AB)
    padded = bytes([Form.RAW_Z]) + _deflated(b"x") + b"trailing"
    with pytest.raises(DecodeError):
        expand_untrusted(padded, CTX_AB)
