"""Store-and-forward wire format: round trips, and any bytes -> value or DecodeError."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.node.storeforward_wire import (
    MAX_MSG_ID_BYTES,
    MAX_SF_MESSAGE_BYTES,
    MAX_SIP_BYTES,
    MIN_MSG_ID_BYTES,
    SfMsgType,
    decode_message_untrusted,
    decode_parcel_untrusted,
    decode_receipt_untrusted,
    encode_message,
    make_parcel,
    make_receipt,
    parcel_signature_ok,
    receipt_signature_ok,
)
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import SIGNATURE_LEN
from meshcomm.wire import codec

ORIGIN = Identity(hashlib.sha256(b"sf-wire-origin").digest())
DEST = Identity(hashlib.sha256(b"sf-wire-dest").digest())
VERIFIER = SignatureVerifier()

msg_ids = st.binary(min_size=MIN_MSG_ID_BYTES, max_size=MAX_MSG_ID_BYTES)
users = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1, max_size=40)
aors = st.builds(lambda u, h: f"sip:{u}@{h}", users, users)
# Plain msgpack values, to build structurally wrong messages.
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=80),
    lambda inner: st.lists(inner, max_size=9), max_leaves=12)


def parcel_for(msg_id: bytes, to_aor: str, sip: bytes) -> bytes:
    parcel = make_parcel(ORIGIN, incident="inc", msg_id=msg_id, from_aor="sip:o@x",
                         to_aor=to_aor, created_wall_s=1700000000.5, sip=sip)
    return encode_message(SfMsgType.OFFER, parcel.signed, parcel.signature)


@settings(max_examples=300)
@given(msg_ids, aors, st.binary(max_size=2000))
def test_parcel_round_trip_and_signature(msg_id: bytes, to_aor: str, sip: bytes) -> None:
    msg = decode_message_untrusted(parcel_for(msg_id, to_aor, sip))
    assert msg.type is SfMsgType.OFFER
    parcel = decode_parcel_untrusted(msg.blob, msg.signature)
    assert (parcel.msg_id, parcel.to_aor, parcel.sip) == (msg_id, to_aor, sip)
    assert parcel.origin == ORIGIN.node_id and parcel.incident == "inc"
    assert parcel_signature_ok(parcel, VERIFIER) and parcel_signature_ok(parcel)


@settings(max_examples=100)
@given(msg_ids, aors, st.floats(0, 2e9))
def test_receipt_round_trip_and_signature(msg_id: bytes, to_aor: str, when: float) -> None:
    receipt = make_receipt(DEST, incident="inc", msg_id=msg_id, to_aor=to_aor,
                           delivered_wall_s=when)
    msg = decode_message_untrusted(encode_message(SfMsgType.RECEIPT, receipt.signed,
                                                  receipt.signature))
    back = decode_receipt_untrusted(msg.blob, msg.signature)
    assert (back.msg_id, back.to_aor, back.delivered_wall_s) == (msg_id, to_aor, when)
    assert back.dest == DEST.node_id and receipt_signature_ok(back, VERIFIER)


def test_accept_round_trip() -> None:
    msg = decode_message_untrusted(encode_message(SfMsgType.ACCEPT, b"m" * 16))
    assert (msg.type, msg.blob, msg.signature) == (SfMsgType.ACCEPT, b"m" * 16, b"")


def test_tampered_parcel_fails_its_signature() -> None:
    parcel = decode_parcel_untrusted(*_blob_sig(parcel_for(b"i" * 16, "sip:d@x", b"hi")))
    signed = parcel.signed.replace(b"hi", b"ho")
    assert not parcel_signature_ok(decode_parcel_untrusted(signed, parcel.signature))


def _blob_sig(body: bytes) -> tuple[bytes, bytes]:
    msg = decode_message_untrusted(body)
    return msg.blob, msg.signature


def _decode_all(body: bytes) -> None:
    """Decode a message and what it carries, as the core does."""
    msg = decode_message_untrusted(body)
    if msg.type in (SfMsgType.OFFER, SfMsgType.DELIVER):
        decode_parcel_untrusted(msg.blob, msg.signature)
    elif msg.type is SfMsgType.RECEIPT:
        decode_receipt_untrusted(msg.blob, msg.signature)


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_message_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        _decode_all(data)


@settings(max_examples=500)
@given(st.binary(max_size=300), st.binary(max_size=80))
def test_any_bytes_give_a_parcel_or_receipt_or_decode_error(data: bytes, sig: bytes) -> None:
    for decoder in (decode_parcel_untrusted, decode_receipt_untrusted):
        with contextlib.suppress(DecodeError):
            decoder(data, sig)


@settings(max_examples=300)
@given(st.lists(values, min_size=0, max_size=6))
def test_wrong_shapes_give_decode_error_only(fields: list[object]) -> None:
    with contextlib.suppress(DecodeError):
        _decode_all(codec.pack(fields))


@settings(max_examples=300)
@given(st.sampled_from(list(SfMsgType)), st.lists(values, max_size=9),
       st.binary(max_size=SIGNATURE_LEN + 1))
def test_wrong_inner_shapes_give_decode_error_only(kind: SfMsgType, inner: list[object],
                                                   sig: bytes) -> None:
    with contextlib.suppress(DecodeError):
        _decode_all(encode_message(kind, codec.pack(inner), sig))


@settings(max_examples=200)
@given(st.data())
def test_every_truncation_of_a_valid_message_is_a_decode_error(data: st.DataObject) -> None:
    body = parcel_for(b"t" * 16, "sip:d@x", data.draw(st.binary(max_size=300)))
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(DecodeError):
        decode_message_untrusted(body[:cut])


def test_oversized_messages_and_fields_are_refused() -> None:
    with pytest.raises(DecodeError) as info:
        decode_message_untrusted(b"\x00" * (MAX_SF_MESSAGE_BYTES + 1))
    assert info.value.reason == "oversized"
    big = make_parcel(ORIGIN, incident="inc", msg_id=b"b" * 16, from_aor="sip:o@x",
                      to_aor="sip:d@x", created_wall_s=1.0, sip=b"x" * (MAX_SIP_BYTES + 1))
    with pytest.raises(DecodeError):
        decode_parcel_untrusted(big.signed, big.signature)
    with pytest.raises(DecodeError):
        decode_message_untrusted(encode_message(SfMsgType.ACCEPT, b"short"))
    with pytest.raises(DecodeError):
        decode_message_untrusted(codec.pack([2, 1, b"", b"s" * SIGNATURE_LEN]))  # version
    with pytest.raises(DecodeError):
        decode_message_untrusted(codec.pack([1, 99, b"", b"s" * SIGNATURE_LEN]))  # type
