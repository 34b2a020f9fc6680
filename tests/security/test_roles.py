"""security.roles: the hand-over record's decoder and the role-address table."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError, TrustError
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.roles import (
    MAX_HANDOVER_BYTES,
    MAX_TRUST_FIELD_BYTES,
    check_handover,
    check_role,
    decode_handover_untrusted,
    decode_trust_field_untrusted,
    pack_trust_bundle,
    parse_role_addresses,
    roles_for,
    sign_handover,
)
from meshcomm.wire import codec

HOLDER = Identity(bytes(range(7, 39)))
NEXT = Identity(bytes(range(9, 41)))
AGENCY = Identity(bytes(range(3, 35)))
OPS = "sip:ops-chief@fire.example"
TABLE = {"ops-chief": ("command",), "safety": ("command", "safety")}


def handover() -> bytes:
    return sign_handover(HOLDER, aor=OPS, new_key=NEXT.public_key, from_time=1000).to_bytes()


def test_round_trip_and_checks() -> None:
    decoded = decode_handover_untrusted(handover())
    assert (decoded.aor, decoded.new_key, decoded.from_time, decoded.signer_key) == (
        OPS, NEXT.public_key, 1000, HOLDER.public_key)
    check_handover(decoded, aor=OPS.upper(), new_key=NEXT.public_key, wall_time_s=1000.0)
    with pytest.raises(TrustError):
        check_handover(decoded, aor=OPS, new_key=HOLDER.public_key, wall_time_s=1000.0)
    with pytest.raises(TrustError):
        check_handover(decoded, aor="sip:safety@fire.example", new_key=NEXT.public_key,
                       wall_time_s=1000.0)


def test_bundle_or_plain_credential() -> None:
    cred = issue_credential(AGENCY, aor_pattern="sip:*@fire.example", role="command",
                            device_key=NEXT.public_key, issued_at=0, expires_at=10)
    plain = decode_trust_field_untrusted(cred.to_bytes())
    assert plain == (cred, None)
    bundle = pack_trust_bundle(cred.to_bytes(), decode_handover_untrusted(handover()))
    assert len(bundle) <= MAX_TRUST_FIELD_BYTES
    got, ho = decode_trust_field_untrusted(bundle)
    assert got == cred and ho is not None and ho.new_key == NEXT.public_key


def test_role_table() -> None:
    medic = issue_credential(AGENCY, aor_pattern="sip:*@fire.example", role="Medic",
                             device_key=NEXT.public_key, issued_at=0, expires_at=10)
    check_role(medic, "sip:bob@fire.example", TABLE)
    with pytest.raises(TrustError):
        check_role(medic, OPS, TABLE)
    assert roles_for("sips:SAFETY@x", TABLE) == ("command", "safety")
    assert parse_role_addresses({"IC": ["Command"]}) == {"ic": ("command",)}
    for bad in ({"a@b": ["x"]}, {"a": []}, {"a": "command"}, {"a": [""]},
                {f"u{i}": ["r"] for i in range(40)}):
        with pytest.raises(ValueError):
            parse_role_addresses(bad)


@pytest.mark.parametrize("data", [
    b"", b"\x92", handover()[:-5], handover() + b"\x00",
    codec.pack([b"x" * 10, b"y" * 64]),
    codec.pack([codec.pack(["meshcomm-handover-v1", OPS, b"k" * 31, 1, b"s" * 32]), b"y" * 64]),
    codec.pack([codec.pack(["meshcomm-handover-v1", OPS, b"k" * 32, -1, b"s" * 32]), b"y" * 64]),
    codec.pack([codec.pack(["other", OPS, b"k" * 32, 1, b"s" * 32]), b"y" * 64]),
    codec.pack([b"z" * (MAX_HANDOVER_BYTES + 1), b"y" * 64]),
])
def test_bad_handovers_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_handover_untrusted(data)


def test_oversized_trust_field() -> None:
    with pytest.raises(DecodeError):
        decode_trust_field_untrusted(codec.pack(["meshcomm-trust-bundle-v1", b"c" * 400,
                                                 b"h" * MAX_HANDOVER_BYTES]))


@settings(max_examples=400)
@given(st.binary(max_size=MAX_TRUST_FIELD_BYTES + 16))
def test_garbage_gives_decode_error_only(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_handover_untrusted(data)
    with contextlib.suppress(DecodeError):
        decode_trust_field_untrusted(data)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=400))
def test_truncations_give_decode_error(cut: int) -> None:
    data = handover()
    with contextlib.suppress(DecodeError):
        decode_handover_untrusted(data[:min(cut, len(data) - 1)])
        pytest.fail("a truncated hand-over decoded")
