"""Per-call key agreement: both gateways derive the same keys; nobody else can."""

from __future__ import annotations

import random

import pytest

from meshcomm.errors import DecodeError, TrustError
from meshcomm.media.keys import (
    NONCE_SIZE_BYTES,
    KeyAgreement,
    new_media_nonce,
    parse_nonce_untrusted,
    stream_id,
)
from meshcomm.security.identity import Identity

CALL = "a84b4c76e66710@pc33.atlanta.example.com"


def ident(n: int) -> Identity:
    return Identity(bytes([n]) * 32)


def test_both_sides_derive_mirrored_keys() -> None:
    alice, bob = KeyAgreement(ident(1)), KeyAgreement(ident(2))
    rng = random.Random(7)
    na, nb = new_media_nonce(rng), new_media_nonce(rng)
    ka = alice.call_keys(bob.public_key, CALL, na, nb)
    kb = bob.call_keys(alice.public_key, CALL, nb, na)
    assert ka.send_key == kb.receive_key
    assert ka.receive_key == kb.send_key
    assert ka.send_key != ka.receive_key          # no reflection: two directional keys
    assert len(ka.send_key) == 32


def test_third_party_with_all_public_inputs_gets_other_keys() -> None:
    alice, bob, eve = KeyAgreement(ident(1)), KeyAgreement(ident(2)), KeyAgreement(ident(3))
    na, nb = b"\x01" * NONCE_SIZE_BYTES, b"\x02" * NONCE_SIZE_BYTES
    real = alice.call_keys(bob.public_key, CALL, na, nb)
    # Eve knows both public keys, the Call-ID and both nonces (signalling is not secret).
    guesses = [eve.call_keys(bob.public_key, CALL, na, nb),
               eve.call_keys(alice.public_key, CALL, nb, na),
               eve.call_keys(alice.public_key, CALL, na, nb)]
    for guess in guesses:
        assert {guess.send_key, guess.receive_key}.isdisjoint({real.send_key, real.receive_key})


def test_keys_depend_on_call_id_and_both_nonces() -> None:
    alice, bob = KeyAgreement(ident(1)), KeyAgreement(ident(2))
    na, nb = b"\x01" * NONCE_SIZE_BYTES, b"\x02" * NONCE_SIZE_BYTES
    base = alice.call_keys(bob.public_key, CALL, na, nb)
    variants = [alice.call_keys(bob.public_key, CALL + "x", na, nb),
                alice.call_keys(bob.public_key, CALL, b"\x03" * NONCE_SIZE_BYTES, nb),
                alice.call_keys(bob.public_key, CALL, na, b"\x03" * NONCE_SIZE_BYTES)]
    assert all(v.send_key != base.send_key for v in variants)


def test_unusable_peer_keys_raise_trust_error() -> None:
    alice = KeyAgreement(ident(1))
    na = b"\x01" * NONCE_SIZE_BYTES
    for bad in (b"\x00" * 32, b"\xff" * 32, b"short"):
        with pytest.raises(TrustError):
            alice.call_keys(bad, CALL, na, na)


def test_stream_ids_per_sender_and_m_line() -> None:
    na, nb = b"\x01" * NONCE_SIZE_BYTES, b"\x02" * NONCE_SIZE_BYTES
    ids = {stream_id(CALL, n, i) for n in (na, nb) for i in range(3)}
    assert len(ids) == 6 and all(len(s) == 8 for s in ids)


def test_nonce_attribute_parsing() -> None:
    nonce = bytes(range(16))
    assert parse_nonce_untrusted(nonce.hex()) == nonce
    for bad in ("", "zz" * 16, "00" * 15, "00" * 17):
        with pytest.raises(DecodeError):
            parse_nonce_untrusted(bad)
