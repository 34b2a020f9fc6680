from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.location.binding import (
    Binding,
    binding_from_envelope_untrusted,
    record_id_of,
)
from meshcomm.security.roles import MAX_TRUST_FIELD_BYTES
from meshcomm.wire import limits
from meshcomm.wire.envelope import (
    MsgType,
    decode_frame_untrusted,
    encode_frame,
    seal,
)

from .helpers import ALICE, BOB, INCIDENT, WALL, binding

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(), st.text(max_size=20), st.binary(max_size=20))
field_values = st.one_of(scalars, st.lists(scalars, max_size=10),
                         st.sampled_from(["sip:a@b", "sips:x@y", "tel:1", "sip:nohost"]),
                         st.integers(0, limits.MAX_LIFETIME_S + 1))
good_fields: list[object] = ["sip:a@b.example", ["mesh:1"], WALL, 60, 0, ["msg"], None]


def from_payload(payload: object) -> Binding | None:
    env = seal(ALICE, MsgType.BINDING, INCIDENT, 1, payload)
    frame = encode_frame(env)
    if len(frame) > limits.MAX_DATAGRAM_BYTES:
        return None
    decoded, _ = decode_frame_untrusted(frame, INCIDENT)
    try:
        return binding_from_envelope_untrusted(decoded)
    except DecodeError:
        return None


@settings(max_examples=600)
@given(st.lists(field_values, max_size=9))
def test_any_payload_gives_binding_or_decode_error(payload: list[object]) -> None:
    from_payload(payload)


@settings(max_examples=600)
@given(st.integers(0, 6), field_values)
def test_one_bad_field_gives_binding_or_decode_error(index: int, value: object) -> None:
    payload = list(good_fields)
    payload[index] = value
    result = from_payload(payload)
    if result is not None:
        assert result.aor.startswith(("sip:", "sips:")) and "@" in result.aor
        assert 0 <= result.lifetime_s <= limits.MAX_LIFETIME_S
        assert len(result.contacts) <= limits.MAX_CONTACTS


@settings(max_examples=600)
@given(st.binary(max_size=limits.MAX_DATAGRAM_BYTES))
def test_any_frame_bytes_give_binding_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        env, _ = decode_frame_untrusted(data, INCIDENT)
        binding_from_envelope_untrusted(env)


def test_round_trip_through_a_frame() -> None:
    original = binding(ALICE, 7, lifetime_s=120, hold_s=0)
    env, _ = decode_frame_untrusted(encode_frame(original.envelope), INCIDENT)
    decoded = binding_from_envelope_untrusted(env)
    assert decoded == original
    assert decoded.key == ALICE.public_key and decoded.node_id == ALICE.node_id
    assert decoded.seq == 7 and not decoded.is_tombstone
    assert decoded.record_id == record_id_of("SIP:Medic@Fire.Example", ALICE.public_key)
    assert decoded.record_id != record_id_of(decoded.aor, BOB.public_key)
    assert binding(ALICE, 8, lifetime_s=0, hold_s=60).is_tombstone


@pytest.mark.parametrize("payload", [
    ["medic@fire.example", [], WALL, 60, 0, [], None],
    ["sip:medic", [], WALL, 60, 0, [], None],
    ["sip:a@b", [], WALL, limits.MAX_LIFETIME_S + 1, 0, [], None],
    ["sip:a@b", [], -1.0, 60, 0, [], None],
    ["sip:a@b", ["c"] * (limits.MAX_CONTACTS + 1), WALL, 60, 0, [], None],
    ["sip:a@b", [], WALL, 60, 0, ["x" * (limits.MAX_CAP_LEN + 1)], None],
    ["sip:a@b", [], WALL, 60, 0, [], "credential-as-text"],
    ["sip:a@b", [], WALL, 60, 0, [], b"c" * (MAX_TRUST_FIELD_BYTES + 1)],
    ["sip:a@b", [], WALL, 60, 0, []],
])
def test_invalid_payloads_are_rejected(payload: list[object]) -> None:
    with pytest.raises(DecodeError):
        binding_from_envelope_untrusted(seal(ALICE, MsgType.BINDING, INCIDENT, 1, payload))


def test_other_message_types_are_not_bindings() -> None:
    env = seal(ALICE, MsgType.HELLO, INCIDENT, 1, good_fields)
    with pytest.raises(DecodeError):
        binding_from_envelope_untrusted(env)
