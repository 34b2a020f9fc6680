"""Token buckets keyed by link-layer host, so one noisy or hostile device cannot starve the
rest, and cannot escape its bucket by rotating UDP source ports.

A link address names the radio and the sender's address on it: ``wlan0|[fe80::1]:47923``
(UDP over IPv6), ``wlan0|10.0.0.7:47923`` (UDP over IPv4), ``eth0|02:00:00:00:00:01``
(raw Ethernet: the MAC), or a bare station name (in-memory radios, the simulator). The
*host* of an address drops the UDP port and keeps everything else: every frame one device
sends, from whatever port, is charged to the same bucket.
"""

from __future__ import annotations

from collections.abc import Hashable

from meshcomm.types import LinkAddr

#: Hosts tracked at once; past this the least recently refilled bucket is forgotten.
MAX_TRACKED_SENDERS = 4096


def link_host(addr: str) -> str:
    """The sending device of a link address: the address without its UDP port."""
    end = addr.find("]:")
    if end >= 0:  # [IPv6]:port
        return addr[:end + 1]
    head, sep, tail = addr.rpartition(":")
    if sep and ":" not in head and tail.isdigit():  # IPv4:port (a MAC keeps its colons)
        return head
    return addr


class TokenBucket:
    """One bucket: ``rate_per_s`` sustained, ``burst`` at once."""

    __slots__ = ("burst", "rate_per_s", "stamp", "tokens")

    def __init__(self, rate_per_s: float, burst: float, now: float = 0.0) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def available(self, now: float) -> float:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate_per_s)
            self.stamp = now
        return self.tokens

    def take(self, now: float) -> bool:
        if self.available(now) >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class TokenBuckets:
    """Per-key buckets (callers key them by :func:`link_host`), bounded in number."""

    def __init__(self, rate_per_s: float, burst: float,
                 max_keys: int = MAX_TRACKED_SENDERS) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}
        #: link address -> its host's bucket, so the per-frame path is one lookup
        self._by_src: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, key: str, now: float, rate_per_s: float | None = None,
               burst: float | None = None) -> TokenBucket:
        """The bucket of ``key`` (created full); ``rate_per_s``/``burst`` retune it."""
        found = self._buckets.get(key)
        if found is None:
            if len(self._buckets) >= self.max_keys:
                # A forgotten key starts over with a full burst; with hosts (not ports) as
                # keys only a flood of spoofed MACs or addresses gets here.
                del self._buckets[next(iter(self._buckets))]
                self._by_src.clear()  # it may point at the forgotten bucket
            found = TokenBucket(self.rate_per_s if rate_per_s is None else rate_per_s,
                                self.burst if burst is None else burst, now)
            self._buckets[key] = found
        elif rate_per_s is not None and found.rate_per_s != rate_per_s:
            found.available(now)
            found.rate_per_s = rate_per_s
            found.burst = float(self.burst if burst is None else burst)
            found.tokens = min(found.tokens, found.burst)
        return found

    def allow(self, src: LinkAddr | str, now: float) -> bool:
        """Charge one token to the host of ``src``; False when its bucket is empty.
        (Runs for every frame received: the refill is inlined.)"""
        b = self._by_src.get(src)
        if b is None:
            if len(self._by_src) >= self.max_keys:
                self._by_src.clear()
            b = self._by_src[src] = self.bucket(link_host(src), now)
        tokens = b.tokens
        if now > b.stamp:
            tokens = min(b.burst, tokens + (now - b.stamp) * b.rate_per_s)
            b.stamp = now
        if tokens >= 1.0:
            b.tokens = tokens - 1.0
            return True
        b.tokens = tokens
        return False


class JournalGate:
    """Whether a dropped input gets a journal record: at most once per ``key`` (a reason
    and a source) every ``interval_s``, and, with a ``budget``, within that bucket overall,
    so a flood from rotating sources cannot grow the journal. At most ``max_keys`` keys are
    remembered (all forgotten when full: at worst a few more records)."""

    def __init__(self, interval_s: float, max_keys: int,
                 budget: TokenBucket | None = None) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.budget = budget
        self._last: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self._last)

    def allow(self, key: Hashable, now: float) -> bool:
        """True: journal this drop (remembered); False: only count it."""
        last = self._last.get(key)
        if ((last is not None and now - last < self.interval_s)
                or (self.budget is not None and not self.budget.take(now))):
            return False
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = now
        return True
