"""Shared helpers for the journal tests."""

from __future__ import annotations

from collections.abc import Callable

import nacl.signing

NODE_ID = bytes(range(32))
OTHER_NODE_ID = bytes(range(1, 33))


def signing_key(seed_byte: int = 7) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([seed_byte]) * 32)


def signer(key: nacl.signing.SigningKey) -> Callable[[bytes], bytes]:
    def sign(message: bytes) -> bytes:
        signature: bytes = key.sign(message).signature
        return signature
    return sign


def event_data(i: int) -> dict[str, object]:
    """Varied, realistic event data for entry ``i``."""
    return {"peer": bytes([i % 256]) * 8, "i": i, "quality": i / 7.0,
            "reason": ["ttl", "dup", "sig"][i % 3], "path": [i, i + 1], "ok": i % 2 == 0,
            "extra": None}
