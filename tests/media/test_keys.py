"""Per-call key agreement: both gateways derive the same keys; nobody else can."""

from __future__ import annotations

import random

import pytest

from meshcomm.errors import DecodeError, TrustError
from meshcomm.media.keys import (
    NONCE_SIZE_BYTES,
    CallKeys,
    KeyAgreement,
    ephemeral_public,
    new_ephemeral_secret,
    new_media_nonce,
    parse_nonce_untrusted,
    stream_id,
)
from meshcomm.security.identity import Identity

CALL = "a84b4c76e66710@pc33.atlanta.example.com"


def ident(n: int) -> Identity:
    return Identity(bytes([n]) * 32)


#: Ephemeral secrets of the calls in these tests, by side (1: first node, 2: the other).
EPH = {1: new_ephemeral_secret(random.Random(11)), 2: new_ephemeral_secret(random.Random(12)),
       3: new_ephemeral_secret(random.Random(13))}


def keys(me: KeyAgreement, peer_key: bytes, call: str, local_nonce: bytes, peer_nonce: bytes,
         mine: int = 1, theirs: int = 2) -> CallKeys:
    return me.call_keys(peer_key, call, local_nonce, peer_nonce, local_eph_secret=EPH[mine],
                        peer_eph=ephemeral_public(EPH[theirs]))


def test_both_sides_derive_mirrored_keys() -> None:
    alice, bob = KeyAgreement(ident(1)), KeyAgreement(ident(2))
    rng = random.Random(7)
    na, nb = new_media_nonce(rng), new_media_nonce(rng)
    ka = keys(alice, bob.public_key, CALL, na, nb)
    kb = keys(bob, alice.public_key, CALL, nb, na, 2, 1)
    assert ka.send_key == kb.receive_key
    assert ka.receive_key == kb.send_key
    assert ka.send_key != ka.receive_key          # no reflection: two directional keys
    assert len(ka.send_key) == 32


def test_third_party_with_all_public_inputs_gets_other_keys() -> None:
    alice, bob, eve = KeyAgreement(ident(1)), KeyAgreement(ident(2)), KeyAgreement(ident(3))
    na, nb = b"\x01" * NONCE_SIZE_BYTES, b"\x02" * NONCE_SIZE_BYTES
    real = keys(alice, bob.public_key, CALL, na, nb)
    # Eve knows both public keys, the Call-ID, both nonces and both ephemeral public keys
    # (signalling is not secret to the two nodes' ... and was readable before issue 12).
    guesses = [keys(eve, bob.public_key, CALL, na, nb, 3, 2),
               keys(eve, alice.public_key, CALL, nb, na, 3, 1),
               keys(eve, alice.public_key, CALL, na, nb, 3, 2)]
    for guess in guesses:
        assert {guess.send_key, guess.receive_key}.isdisjoint({real.send_key, real.receive_key})


def test_keys_depend_on_call_id_and_both_nonces() -> None:
    alice, bob = KeyAgreement(ident(1)), KeyAgreement(ident(2))
    na, nb = b"\x01" * NONCE_SIZE_BYTES, b"\x02" * NONCE_SIZE_BYTES
    base = keys(alice, bob.public_key, CALL, na, nb)
    variants = [keys(alice, bob.public_key, CALL + "x", na, nb),
                keys(alice, bob.public_key, CALL, b"\x03" * NONCE_SIZE_BYTES, nb),
                keys(alice, bob.public_key, CALL, na, b"\x03" * NONCE_SIZE_BYTES),
                keys(alice, bob.public_key, CALL, na, nb, 1, 3)]     # another ephemeral
    assert all(v.send_key != base.send_key for v in variants)


def test_unusable_peer_keys_raise_trust_error() -> None:
    alice = KeyAgreement(ident(1))
    na = b"\x01" * NONCE_SIZE_BYTES
    for bad in (b"\x00" * 32, b"\xff" * 32, b"short"):
        with pytest.raises(TrustError):
            keys(alice, bad, CALL, na, na)
    bob = KeyAgreement(ident(2))
    for bad in (b"\x00" * 32, b"\x01" + b"\x00" * 31, b"short"):   # small-order ephemeral
        with pytest.raises(TrustError):
            alice.call_keys(bob.public_key, CALL, na, na, local_eph_secret=EPH[1], peer_eph=bad)


def test_forward_secrecy_a_node_key_alone_gives_no_call_key() -> None:
    """Whoever later holds both node keys (a captured handset and relay) but not the
    dropped ephemeral secrets derives other keys than the call's."""
    alice, bob = KeyAgreement(ident(1)), KeyAgreement(ident(2))
    na, nb = b"\x01" * NONCE_SIZE_BYTES, b"\x02" * NONCE_SIZE_BYTES
    real = keys(alice, bob.public_key, CALL, na, nb)
    # the attacker knows alice's node key and both ephemeral public keys; it can only try
    # an ephemeral secret of its own choosing
    guess = keys(alice, bob.public_key, CALL, na, nb, 3, 2)
    assert {guess.send_key, guess.receive_key}.isdisjoint({real.send_key, real.receive_key})


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
