from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.security.identity import Identity, fingerprint, node_id_of, verify_signature
from meshcomm.security.verify import SignatureVerifier

SEED = bytes(range(32))


def test_node_id_is_sha256_of_public_key() -> None:
    ident = Identity(SEED)
    assert len(ident.public_key) == 32
    assert ident.node_id == hashlib.sha256(ident.public_key).digest()
    assert node_id_of(ident.public_key) == ident.node_id
    assert fingerprint(ident.public_key) == ident.node_id[:4].hex()


def test_identity_is_deterministic_and_never_shows_its_seed() -> None:
    a, b = Identity(SEED), Identity.from_random(SEED + b"extra")
    assert a.public_key == b.public_key and a.sign(b"m") == b.sign(b"m")
    assert Identity(bytes(32)).public_key != a.public_key
    assert SEED.hex() not in repr(a) and repr(SEED) not in repr(a)


@given(st.binary(max_size=100))
def test_signatures_verify_and_bind_key_and_message(message: bytes) -> None:
    ident = Identity(SEED)
    sig = ident.sign(message)
    assert len(sig) == 64
    assert verify_signature(ident.public_key, message, sig)
    assert not verify_signature(ident.public_key, message + b"x", sig)
    assert not verify_signature(Identity(bytes(32)).public_key, message, sig)


@settings(max_examples=300)
@given(st.binary(max_size=40), st.binary(max_size=40), st.binary(max_size=80))
def test_verify_signature_never_raises(key: bytes, message: bytes, sig: bytes) -> None:
    assert verify_signature(key, message, sig) in (True, False)


def test_verify_signature_rejects_small_order_key() -> None:
    identity_point = b"\x01" + bytes(31)
    assert not verify_signature(identity_point, b"", bytes(64))


def test_verifier_caches_verdicts_per_key_and_message() -> None:
    ident = Identity(SEED)
    verifier = SignatureVerifier(max_entries=4)
    sig = ident.sign(b"hello")
    assert verifier.verify(ident.public_key, b"hello", sig)
    assert verifier.verify(ident.public_key, b"hello", sig)
    assert (verifier.verified, verifier.cache_hits) == (1, 1)
    # The same signature with another message or key is checked again, not taken from cache.
    assert not verifier.verify(ident.public_key, b"hellO", sig)
    assert not verifier.verify(Identity(bytes(32)).public_key, b"hello", sig)
    assert verifier.verified == 3
    # A bad verdict is cached too, and the cache stays bounded.
    assert not verifier.verify(ident.public_key, b"hellO", sig)
    assert verifier.verified == 4
    for n in range(10):
        assert verifier.verify(ident.public_key, bytes([n]), ident.sign(bytes([n])))
    assert len(verifier._cache) == 4
