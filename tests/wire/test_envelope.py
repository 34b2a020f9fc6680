"""Signed envelopes: decoders never crash; round trips; signatures cover all but hop fields.

Wire version 2 (issue 13): frames carry an incident tag and the origin's key or short id;
the canonical signed form is rebuilt by the receiver (tests adjusted from msgpack frames to
the binary header, same intent)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.security.identity import Identity, node_id_of, verify_signature
from meshcomm.security.verify import SignatureVerifier
from meshcomm.wire import codec, limits
from meshcomm.wire.envelope import (
    FLAG_FULL_KEY,
    FRAME_MARK,
    MAX_AGE_MS,
    MAX_METRIC,
    ORIGIN_SHORT_LEN,
    SIGNATURE_DOMAIN,
    Envelope,
    Hop,
    MsgType,
    decode_frame_untrusted,
    decode_signed_untrusted,
    encode_frame,
    incident_tag,
    parse_frame_untrusted,
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
                 metric=st.integers(0, MAX_METRIC), age_ms=st.integers(0, MAX_AGE_MS),
                 addressed=st.booleans())
INCIDENT = "incident-7"


def alice_only(short: bytes) -> bytes | None:
    return ALICE.public_key if short == ALICE.node_id[:ORIGIN_SHORT_LEN] else None


def sample_envelope() -> Envelope:
    return seal(ALICE, MsgType.BINDING, INCIDENT, 42,
                ["sip:a@b.example", ["udp:fe80::1"], 1.0, 300, 0, [], None])


def decode_or_error(data: bytes) -> tuple[Envelope, Hop] | DecodeError:
    try:
        return decode_frame_untrusted(data, INCIDENT, alice_only)
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
    """Frames with a valid header and any payload, or msgpack where a header belongs,
    reach the field checks."""
    head = encode_frame(sample_envelope())[:2 + 4 + 32 + 1 + 64]
    for payload in (codec.pack(inner), codec.pack(hop), codec.pack([inner, hop])):
        decode_or_error(head + payload)
        decode_or_error(codec.pack([payload, b"s" * 64, hop]))
    for signed in (codec.pack(inner), codec.pack([2, 2, "i", b"k" * 32, 1, inner])):
        with contextlib.suppress(DecodeError):
            decode_signed_untrusted(signed, b"s" * 64)


def test_every_prefix_of_a_valid_frame_is_rejected() -> None:
    frame = encode_frame(sample_envelope(), Hop(ttl=5, hops=1, metric=16, age_ms=100))
    for end in range(len(frame)):
        with pytest.raises(DecodeError):
            decode_frame_untrusted(frame[:end], INCIDENT)


def test_trailing_and_oversized_frames_are_rejected() -> None:
    frame = encode_frame(sample_envelope())
    with pytest.raises(DecodeError) as info:
        decode_frame_untrusted(frame + b"\x00", INCIDENT)
    assert info.value.reason == "trailing"
    big = seal(ALICE, MsgType.UNICAST, "i", 1, b"x" * limits.MAX_DATAGRAM_BYTES)
    with pytest.raises(DecodeError) as info:
        decode_frame_untrusted(encode_frame(big), "i")
    assert info.value.reason == "oversized"
    with pytest.raises(DecodeError) as info:
        decode_frame_untrusted(b"\x00" * (limits.MAX_DATAGRAM_BYTES + 1), INCIDENT)
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
    decoded, decoded_hop = decode_frame_untrusted(frame, incident)
    assert decoded == env
    assert decoded_hop == hop
    assert (decoded.msg_type, decoded.incident, decoded.seq, decoded.payload) == \
        (msg_type, incident, seq, payload)
    assert decoded.origin_key == ALICE.public_key
    assert decoded.origin == ALICE.node_id == node_id_of(ALICE.public_key)
    assert decoded.verify(SignatureVerifier())
    assert decoded.digest == env.digest and len(decoded.digest) == 16
    # the key elided: the same envelope (digest, signature) from the key directory
    short = encode_frame(env, dataclasses.replace(hop, key_elided=True))
    assert len(short) == len(frame) - (32 - ORIGIN_SHORT_LEN)
    again, again_hop = decode_frame_untrusted(short, incident, alice_only)
    assert again == env and again_hop == dataclasses.replace(hop, key_elided=True)


def test_hop_fields_are_outside_the_signature() -> None:
    env = sample_envelope()
    verifier = SignatureVerifier()
    for hop in (Hop(), Hop(ttl=limits.MAX_TTL, hops=limits.MAX_HOPS, metric=MAX_METRIC,
                           age_ms=MAX_AGE_MS), Hop(3, 4, 5, 6)):
        decoded, decoded_hop = decode_frame_untrusted(encode_frame(env, hop), INCIDENT)
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
        "version": codec.pack([1, 1, "i", ALICE.public_key, 1, None]),
        "unknown_type": codec.pack([2, 99, "i", ALICE.public_key, 1, None]),
        "malformed": codec.pack([2, 1, "i", b"short", 1, None]),
    }
    for reason, signed in cases.items():
        with pytest.raises(DecodeError) as info:
            decode_signed_untrusted(signed, sig)
        assert info.value.reason == reason
    frame = encode_frame(sample_envelope(), Hop(ttl=5, hops=1, metric=16, age_ms=100))
    hop_at = 2 + 4 + 32 + 1 + 64
    bad = {
        "unknown_type": [bytes([frame[0], 99]) + frame[2:], b"\x93" + frame[1:],
                         bytes([frame[0] | 0x10]) + frame[1:]],
        "malformed": [frame[:hop_at] + bytes([limits.MAX_TTL + 1]) + frame[hop_at + 1:],
                      frame[:hop_at + 1] + bytes([limits.MAX_HOPS + 1]) + frame[hop_at + 2:],
                      frame[:hop_at + 2] + b"\xff" * 11 + frame[hop_at + 3:],
                      frame[:hop_at + 2] + b"\x80\x80\x41" + frame[hop_at + 3:]],
        "truncated": [frame[:hop_at + 1]],
        "wrong_incident": [frame[:2] + bytes(4) + frame[6:]],
    }
    for reason, frames in bad.items():
        for data in frames:
            with pytest.raises(DecodeError) as info:
                decode_frame_untrusted(data, INCIDENT)
            assert info.value.reason == reason, (reason, data[:8])


def test_non_canonical_signed_parts_are_refused() -> None:
    """The canonical form must be rebuilt byte for byte by every receiver: a signed part
    packed otherwise (here the seq as a uint64 where a fixint fits) is refused."""
    env = sample_envelope()
    header = codec.pack([limits.WIRE_VERSION, int(env.msg_type), INCIDENT, ALICE.public_key])
    payload = env.signed_bytes[len(header) + 1:]
    loose = b"\x96" + header[1:] + b"\xcf" + (42).to_bytes(8, "big") + payload
    assert codec.unpack_untrusted(loose) == codec.unpack_untrusted(env.signed_bytes)
    with pytest.raises(DecodeError):
        decode_signed_untrusted(loose, env.signature)
    assert decode_signed_untrusted(env.signed_bytes, env.signature) == env


def test_incident_is_bound_by_the_signature_not_the_tag() -> None:
    """A frame of another incident whose tag collides with ours is rebuilt with our
    incident name and fails its signature; the tag alone filters the others."""
    env = seal(ALICE, MsgType.HELLO, "other-incident", 3, [1, "handset", []])
    frame = encode_frame(env)
    with pytest.raises(DecodeError) as info:
        decode_frame_untrusted(frame, INCIDENT)
    assert info.value.reason == "wrong_incident"
    collided = frame[:2] + incident_tag(INCIDENT) + frame[6:]
    rebuilt, _ = decode_frame_untrusted(collided, INCIDENT)
    assert rebuilt.incident == INCIDENT and not rebuilt.verify(SignatureVerifier())


def test_unknown_or_wrong_short_ids_never_verify() -> None:
    env = sample_envelope()
    short = encode_frame(env, Hop(key_elided=True))
    assert short[0] == FRAME_MARK                            # no full key flag
    assert encode_frame(env)[0] == FRAME_MARK | FLAG_FULL_KEY
    with pytest.raises(DecodeError) as info:
        decode_frame_untrusted(short, INCIDENT)
    assert info.value.reason == "unknown_origin"
    with pytest.raises(DecodeError):
        decode_frame_untrusted(short, INCIDENT, lambda _short: None)
    # A key directory giving another key under that short id: the rebuilt envelope
    # names that key, and Alice's signature does not verify for it.
    wrong, _ = decode_frame_untrusted(short, INCIDENT, lambda _short: MALLORY.public_key)
    assert not wrong.verify(SignatureVerifier())
    # Mallory's frame naming Alice's short id (re-binding attempt) fails as well.
    forged = seal(MALLORY, MsgType.BINDING, INCIDENT, 42, env.payload)
    frame = bytearray(encode_frame(forged, Hop(key_elided=True)))
    frame[6:6 + ORIGIN_SHORT_LEN] = ALICE.node_id[:ORIGIN_SHORT_LEN]
    decoded, _ = decode_frame_untrusted(bytes(frame), INCIDENT, alice_only)
    assert decoded.origin == ALICE.node_id and not decoded.verify(SignatureVerifier())


def test_frame_overhead_is_small() -> None:
    """Issue 13: a UNICAST with an empty body, key elided, 4 hops from its origin."""
    payload = [ALICE.node_id[:8], 1, b"", 0, []]
    env = seal(ALICE, MsgType.UNICAST, INCIDENT, (7 << 32) + 123, payload)
    hop = Hop(ttl=28, hops=4, metric=80, addressed=True)
    assert len(encode_frame(env, dataclasses.replace(hop, key_elided=True))) <= 110
    assert len(encode_frame(env, hop)) <= 134
    assert len(encode_frame(seal(ALICE, MsgType.HELLO, INCIDENT, 1, [1, "handset", []]))) < 120


def test_parsing_is_a_pure_function_of_the_bytes() -> None:
    frame = encode_frame(sample_envelope(), Hop(ttl=5, acks=b"a" * 12, mac=b"m" * 8))
    one, hop = parse_frame_untrusted(frame)
    assert parse_frame_untrusted(frame) == (one, hop)
    assert hop.acks == b"a" * 12 and hop.mac == b"m" * 8 and one.tag == incident_tag(INCIDENT)


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


@settings(max_examples=300)
@given(st.sampled_from(list(MsgType)), st.text(max_size=limits.MAX_INCIDENT_LEN),
       st.integers(0, limits.MAX_SEQ))
def test_the_canonical_head_is_what_msgpack_packs(msg_type: MsgType, incident: str,
                                                   seq: int) -> None:
    """The frame codec builds and measures the canonical header without msgpack (speed):
    it must be exactly msgpack's packing, the payload starting where it says."""
    env = seal(ALICE, msg_type, incident, seq, None)
    assert env.signed_bytes == codec.pack([limits.WIRE_VERSION, int(msg_type), incident,
                                           ALICE.public_key, seq, None])
    frame = encode_frame(env)
    assert frame.endswith(b"\xc0")                   # the payload (None), and nothing else
    if len(frame) <= limits.MAX_DATAGRAM_BYTES:
        assert decode_frame_untrusted(frame, incident)[0] == env


def test_the_digest_is_computed_once_and_never_outlives_a_change() -> None:
    """The digest is kept on the envelope (a relay reads it several times per frame); an
    envelope copied with other bytes gets its own, and equality ignores the cache."""
    env = sample_envelope()
    fresh = sample_envelope()
    assert env.digest == env.digest == fresh.digest
    assert env == sample_envelope()             # one with its digest computed, one without
    other = dataclasses.replace(env, signature=bytes(64))
    assert other.digest != env.digest
    assert other.digest == dataclasses.replace(fresh, signature=bytes(64)).digest
