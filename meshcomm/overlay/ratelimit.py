"""Per-neighbour token buckets, so one noisy or hostile sender cannot starve the rest."""

from __future__ import annotations

from meshcomm.types import LinkAddr

#: Senders tracked at once; past this the oldest buckets are forgotten.
MAX_TRACKED_SENDERS = 4096


class TokenBuckets:
    def __init__(self, rate_per_s: float, burst: int):
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._buckets: dict[LinkAddr, tuple[float, float]] = {}

    def allow(self, src: LinkAddr, now: float) -> bool:
        tokens, stamp = self._buckets.get(src, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate_per_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if src not in self._buckets and len(self._buckets) >= MAX_TRACKED_SENDERS:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[src] = (tokens, now)
        return allowed
