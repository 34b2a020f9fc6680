"""Signature verification with a bounded cache, so each envelope is checked once.

A verifier is injected into cores. The simulator may share one verifier among all its
nodes: verification is a pure function of (key, message, signature), so sharing changes
no outcome, only the cost.
"""

from __future__ import annotations

from meshcomm.security.identity import verify_signature

DEFAULT_CACHE_ENTRIES = 8192


class SignatureVerifier:
    """Verifies Ed25519 signatures and remembers recent verdicts."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self._max_entries = max_entries
        self._cache: dict[bytes, tuple[bytes, bytes, bool]] = {}
        self.verified = 0
        self.cache_hits = 0

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        cached = self._cache.get(signature)
        if cached is not None and cached[0] == public_key and cached[1] == message:
            self.cache_hits += 1
            return cached[2]
        ok = verify_signature(public_key, message, signature)
        self.verified += 1
        if len(self._cache) >= self._max_entries:
            # Drop the oldest entry (dicts keep insertion order).
            del self._cache[next(iter(self._cache))]
        self._cache[signature] = (public_key, message, ok)
        return ok
