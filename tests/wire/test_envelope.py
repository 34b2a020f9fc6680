"""Signed envelopes: decoders never crash; round trips; signatures cover all but hop fields."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.security.identity import Identity, node_id_of, verify_signature
from meshcomm.security.verify import SignatureVerifier
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import (
    MAX_AGE_MS,
    MAX_METRIC,
    SIGNATURE_DOMAIN,
    Envelope,
    Hop,
    MsgType,
    decode_frame_untrusted,
    decode_signed_untrusted,
    encode_frame,
    seal,
)

ALICE = Identity(bytes(range(32)))
MALLORY = Identity(bytes(range(1, 33)))

payloads = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=16) | st.binary(max_size=16),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)
hops = st.builds(Hop, ttl=st.integers(0, limits.MAX_TTL), hops=st.integers(0, limits.MAX_HOPS),
                 metric=st.integers(0, MAX_METRIC), age_ms=st.integers(0, MAX_AGE_MS))


def sample_envelope() -> Envelope:
    return seal(ALICE, MsgType.BINDING, "incident-7", 42,
                ["sip:a@b.example", ["udp:fe80::1"], 1.0, 300, 0, [], None])


def decode_or_error(data: bytes) -> tuple[Envelope, Hop] | DecodeError:
    try:
        return decode_frame_untrusted(data)
    except DecodeError as exc:
        return exc


@settings(max_examples=1000)
@given(st.binary(max_size=limits.MAX_DATAGRAM_BYTES + 10))
def test_frame_any_bytes_give_value_or_decode_error(data: bytes) -> None:
    decode_or_error(data)


@settings(max_examples=500)
@given(st.binary(max_size=300), st.binary(max_size=80))
def test_signed_any_bytes_give_value_or_decode_error(signed: bytes, signature: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_signed_untrusted(signed, signature)


@settings(max_examples=500)
@given(st.lists(payloads, max_size=7), st.lists(payloads, max_size=5))
def test_structured_garbage_gives_value_or_decode_error(inner: list[object],
                                                        hop: list[object]) -> None:
    """Frames that are well-formed msgpack with wrong shapes reach the field checks."""
    for signed in (codec.pack(inner), codec.pack([1, 2, "i", b"k" * 32, 1, inner])):
        decode_or_error(codec.pack([signed, b"s" * 64, hop]))
        decode_or_error(codec.pack([signed, b"s" * 64, [0, 0, 0, 0]]))


def test_every_prefix_of_a_valid_frame_is_rejected() -> None:
    frame = encode_frame(sample_envelope(), Hop(ttl=5, hops=1, metric=16, age_ms=100))
    for end in range(len(frame)):
        with pytest.raises(DecodeError):
            decode_frame_untrusted(frame[:end])


def test_trailing_and_oversized_frames_are_rejected() -> None:
    frame = encode_frame(sample_envelope())
    with pytest.raises(DecodeError):
        decode_frame_untrusted(frame + b"\x00")
    big = seal(ALICE, MsgType.UNICAST, "i", 1, b"x" * limits.MAX_DATAGRAM_BYTES)
    with pytest.raises(DecodeError) as info:
        decode_frame_untrusted(encode_frame(big))
    assert info.value.reason == "oversized"
    with pytest.raises(DecodeError) as info:
        decode_frame_untrusted(b"\x00" * (limits.MAX_DATAGRAM_BYTES + 1))
    assert info.value.reason == "oversized"


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(list(MsgType)), st.text(max_size=limits.MAX_INCIDENT_LEN),
       st.integers(0, limits.MAX_SEQ), payloads, hops)
def test_seal_encode_decode_round_trip(msg_type: MsgType, incident: str, seq: int,
                                       payload: object, hop: Hop) -> None:
    env = seal(ALICE, msg_type, incident, seq, payload)
    frame = encode_frame(env, hop)
    if len(frame) > limits.MAX_DATAGRAM_BYTES:
        return
    decoded, decoded_hop = decode_frame_untrusted(frame)
    assert decoded == env
    assert decoded_hop == hop
    assert (decoded.msg_type, decoded.incident, decoded.seq, decoded.payload) == \
        (msg_type, incident, seq, payload)
    assert decoded.origin_key == ALICE.public_key
    assert decoded.origin == ALICE.node_id == node_id_of(ALICE.public_key)
    assert decoded.verify(SignatureVerifier())
    assert decoded.digest == env.digest and len(decoded.digest) == 16


def test_hop_fields_are_outside_the_signature() -> None:
    env = sample_envelope()
    verifier = SignatureVerifier()
    for hop in (Hop(), Hop(ttl=limits.MAX_TTL, hops=limits.MAX_HOPS, metric=MAX_METRIC,
                           age_ms=MAX_AGE_MS), Hop(3, 4, 5, 6)):
        decoded, decoded_hop = decode_frame_untrusted(encode_frame(env, hop))
        assert decoded_hop == hop
        assert decoded.signed_bytes == env.signed_bytes
        assert decoded.verify(verifier)


def test_every_flipped_bit_fails_unless_it_is_a_hop_field() -> None:
    env = sample_envelope()
    hop = Hop(ttl=5, hops=1, metric=16, age_ms=100)
    frame = encode_frame(env, hop)
    outcomes = {"decode_error": 0, "bad_signature": 0, "hop_changed": 0}
    for bit in range(len(frame) * 8):
        mutated = bytearray(frame)
        mutated[bit // 8] ^= 1 << (bit % 8)
        result = decode_or_error(bytes(mutated))
        if isinstance(result, DecodeError):
            outcomes["decode_error"] += 1
            continue
        decoded, decoded_hop = result
        if verify_signature(decoded.origin_key, SIGNATURE_DOMAIN + decoded.signed_bytes,
                            decoded.signature):
            # Only the unsigned hop part may change and still verify.
            assert (decoded.signed_bytes, decoded.signature) == (env.signed_bytes,
                                                                 env.signature)
            assert decoded_hop != hop
            outcomes["hop_changed"] += 1
        else:
            outcomes["bad_signature"] += 1
    assert all(outcomes.values()), outcomes


def test_forged_and_wrong_key_envelopes_fail_verification() -> None:
    env = sample_envelope()
    verifier = SignatureVerifier()
    forged = Envelope(env.msg_type, env.incident, ALICE.public_key, ALICE.node_id, env.seq,
                      env.payload, env.signed_bytes,
                      MALLORY.sign(SIGNATURE_DOMAIN + env.signed_bytes))
    assert not forged.verify(verifier)
    # Same signed bytes re-signed without the domain prefix do not verify either.
    undomained = decode_signed_untrusted(env.signed_bytes, ALICE.sign(env.signed_bytes))
    assert not undomained.verify(verifier)
    assert env.verify(verifier)


def test_wrong_version_and_unknown_type_have_reasons() -> None:
    sig = b"\x00" * 64
    cases = {
        "version": codec.pack([2, 1, "i", ALICE.public_key, 1, None]),
        "unknown_type": codec.pack([1, 99, "i", ALICE.public_key, 1, None]),
        "malformed": codec.pack([1, 1, "i", b"short", 1, None]),
    }
    for reason, signed in cases.items():
        with pytest.raises(DecodeError) as info:
            decode_signed_untrusted(signed, sig)
        assert info.value.reason == reason
    with pytest.raises(DecodeError):
        decode_frame_untrusted(codec.pack([cases["version"][:3], sig, [0, 0, 0, 0]]))
    for bad_hop in ([limits.MAX_TTL + 1, 0, 0, 0], [0, -1, 0, 0], [0, 0, MAX_METRIC + 1, 0],
                    [0, 0, 0, MAX_AGE_MS + 1], [0, 0, 0], [0, 0, 0, True]):
        with pytest.raises(DecodeError):
            decode_frame_untrusted(codec.pack([sample_envelope().signed_bytes, sig, bad_hop]))


VALID_FRAME = encode_frame(sample_envelope(), Hop(ttl=5, hops=1, metric=16, age_ms=100))


@settings(max_examples=800)
@given(st.lists(st.tuples(st.integers(0, len(VALID_FRAME) - 1), st.integers(0, 255),
                          st.sampled_from(["set", "insert", "delete"])), min_size=1,
                max_size=6))
def test_mutated_valid_frames_give_value_or_decode_error(
        edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(VALID_FRAME)
    for position, value, kind in edits:
        position = min(position, len(data) - 1)
        if kind == "set":
            data[position] = value
        elif kind == "insert":
            data.insert(position, value)
        elif len(data) > 1:
            del data[position]
    result = decode_or_error(bytes(data))
    if isinstance(result, DecodeError):
        return
    decoded, _ = result
    original = sample_envelope()
    if (decoded.signed_bytes, decoded.signature) != (original.signed_bytes, original.signature):
        assert not decoded.verify(SignatureVerifier())
