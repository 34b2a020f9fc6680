"""Device identity: an Ed25519 key pair; NodeId = SHA-256(public key)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from meshcomm.types import NodeId, PublicKey


def node_id_of(public_key: bytes) -> NodeId:
    """NodeId of a public key: SHA-256 over the raw 32-byte key."""
    return NodeId(hashlib.sha256(public_key).digest())


def fingerprint(public_key: bytes) -> str:
    """Short human fingerprint of a key (first 4 bytes of its NodeId, hex)."""
    return node_id_of(public_key)[:4].hex()


@dataclass(frozen=True)
class Identity:
    """A signing identity. ``seed`` is the 32-byte Ed25519 private seed (never logged)."""

    seed: bytes = field(repr=False)
    _signing_key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    public_key: PublicKey = field(init=False)
    node_id: NodeId = field(init=False)

    def __post_init__(self) -> None:
        key = nacl.signing.SigningKey(self.seed)
        object.__setattr__(self, "_signing_key", key)
        object.__setattr__(self, "public_key", PublicKey(bytes(key.verify_key)))
        object.__setattr__(self, "node_id", node_id_of(bytes(key.verify_key)))

    @classmethod
    def from_random(cls, rng_bytes: bytes) -> Identity:
        """Create from 32 bytes of entropy supplied by the caller (sans-IO)."""
        return cls(seed=bytes(rng_bytes[:32]))

    def sign(self, message: bytes) -> bytes:
        """Detached 64-byte Ed25519 signature over ``message``."""
        signed: bytes = self._signing_key.sign(message).signature
        return signed


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        return False
    return True
