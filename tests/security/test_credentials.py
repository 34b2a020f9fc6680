from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError, TrustError
from meshcomm.security.credentials import (
    CREDENTIAL_DOMAIN,
    Credential,
    aor_matches,
    check_credential,
    decode_credential_untrusted,
    issue_credential,
)
from meshcomm.security.identity import Identity
from meshcomm.wire import codec, limits

AGENCY = Identity(bytes(range(32)))
OTHER_AGENCY = Identity(bytes(range(2, 34)))
DEVICE = Identity(bytes(32))
TRUSTED = frozenset({AGENCY.public_key})


def issue(pattern: str = "sip:*@fire.example", expires_at: int = 2000) -> Credential:
    return issue_credential(AGENCY, aor_pattern=pattern, role="medic",
                            device_key=DEVICE.public_key, issued_at=1000,
                            expires_at=expires_at)


def check(cred: Credential, aor: str = "sip:medic-7@fire.example", now: float = 1500,
          device_key: bytes = DEVICE.public_key,
          trusted: frozenset[bytes] = TRUSTED) -> None:
    check_credential(cred, trusted_agency_keys=trusted, device_key=device_key, aor=aor,
                     wall_time_s=now)


@settings(max_examples=1000)
@given(st.binary(max_size=limits.MAX_CREDENTIAL_BYTES + 20))
def test_any_bytes_give_credential_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_credential_untrusted(data)


fields = st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=30),
                   st.binary(max_size=40), st.lists(st.integers(0, 2**32), max_size=3))


@settings(max_examples=500)
@given(st.lists(fields, max_size=8), st.binary(max_size=70), st.integers(0, 6), fields)
def test_structured_garbage_gives_credential_or_decode_error(
        body_fields: list[object], sig: bytes, index: int, replacement: object) -> None:
    good = codec.unpack_untrusted(issue().signed_bytes)
    good[index] = replacement
    for body in (codec.pack(body_fields), codec.pack(good)):
        for outer in ([body, sig], [body, b"s" * 64], [body], body):
            with contextlib.suppress(DecodeError):
                decode_credential_untrusted(codec.pack(outer))


def test_round_trip_and_valid_credential_passes() -> None:
    cred = issue()
    decoded = decode_credential_untrusted(cred.to_bytes())
    assert decoded == cred
    assert len(cred.to_bytes()) <= limits.MAX_CREDENTIAL_BYTES
    check(decoded)
    check(decoded, aor="SIP:Medic-7@Fire.Example")


def test_every_prefix_is_rejected() -> None:
    data = issue().to_bytes()
    for end in range(len(data)):
        with pytest.raises(DecodeError):
            decode_credential_untrusted(data[:end])


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda c: check(c, trusted=frozenset({OTHER_AGENCY.public_key})), "untrusted_agency"),
    (lambda c: check(c, device_key=OTHER_AGENCY.public_key), "bad_credential"),
    (lambda c: check(c, aor="sip:medic-7@police.example"), "credential_scope"),
    (lambda c: check(c, aor="sip:a@b@fire.example"), "credential_scope"),
    (lambda c: check(c, now=2001), "credential_expired"),
])
def test_check_credential_reasons(mutate: object, reason: str) -> None:
    assert callable(mutate)
    with pytest.raises(TrustError) as info:
        mutate(issue())
    assert info.value.reason == reason


def test_forged_credential_is_rejected() -> None:
    cred = issue()
    # An attacker re-signs the body with their own key but keeps the trusted agency's name.
    forged = Credential(cred.agency_key, cred.aor_pattern, cred.role, cred.device_key,
                        cred.issued_at, cred.expires_at, cred.signed_bytes,
                        OTHER_AGENCY.sign(cred.signed_bytes))
    with pytest.raises(TrustError) as info:
        check(decode_credential_untrusted(forged.to_bytes()))
    assert info.value.reason == "bad_credential"
    # Every bit flip in the encoded credential is caught at decoding or checking.
    data = cred.to_bytes()
    for bit in range(len(data) * 8):
        mutated = bytearray(data)
        mutated[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises((DecodeError, TrustError)):
            check(decode_credential_untrusted(bytes(mutated)))


def test_domain_separation() -> None:
    body = codec.pack(["not-a-credential", AGENCY.public_key, "sip:a@b", "r",
                       DEVICE.public_key, 1, 2])
    with pytest.raises(DecodeError):
        decode_credential_untrusted(codec.pack([body, AGENCY.sign(body)]))
    assert CREDENTIAL_DOMAIN in codec.unpack_untrusted(issue().signed_bytes)


@pytest.mark.parametrize(("pattern", "aor", "expected"), [
    ("sip:medic-7@fire.example", "sip:medic-7@fire.example", True),
    ("sip:medic-7@fire.example", "SIP:MEDIC-7@FIRE.EXAMPLE", True),
    ("sip:medic-7@fire.example", "sip:medic-8@fire.example", False),
    ("sip:*@fire.example", "sip:anyone@fire.example", True),
    ("sip:*@fire.example", "sip:a@evil@fire.example", False),
    ("sip:*@fire.example", "sip:x@fire.example.evil", False),
    ("sip:*@fire.example", "sips:x@fire.example", False),
    ("sip:engine-*@fire.example", "sip:engine-3@fire.example", True),
    ("sip:engine-*@fire.example", "sip:medic-3@fire.example", False),
    ("sip:a*a@x", "sip:a@x", False),
    ("sip:*@x", "sip:evil:x@x", False),
])
def test_aor_patterns(pattern: str, aor: str, expected: bool) -> None:
    assert aor_matches(pattern, aor) is expected


@pytest.mark.parametrize("kwargs", [
    {"device_key": b"short"}, {"aor_pattern": ""}, {"aor_pattern": "sip:*@*"},
    {"aor_pattern": "x" * 300}, {"expires_at": 1000}, {"role": "r" * 33},
])
def test_issue_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"aor_pattern": "sip:a@b", "role": "r",
                               "device_key": DEVICE.public_key, "issued_at": 1000,
                               "expires_at": 2000}
    args.update(kwargs)
    with pytest.raises(ValueError):
        issue_credential(AGENCY, **args)  # type: ignore[arg-type]
