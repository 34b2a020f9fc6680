"""JournalGate: the one rate limit of drop records (overlay, store-and-forward, DHT bridge,
tunnel answers)."""

from __future__ import annotations

from meshcomm.overlay.ratelimit import JournalGate, TokenBucket


def test_once_per_key_per_interval() -> None:
    gate = JournalGate(1.0, 16)
    assert gate.allow(("bad", "a"), 0.0)
    assert not gate.allow(("bad", "a"), 0.5)
    assert gate.allow(("bad", "b"), 0.5)
    assert gate.allow(("bad", "a"), 1.0)


def test_a_flood_from_rotating_sources_stays_within_the_budget_and_the_key_bound() -> None:
    gate = JournalGate(1.0, 64, TokenBucket(5.0, 10, 0.0))
    allowed = sum(gate.allow(("bad", f"src{i}"), i * 0.001) for i in range(100_000))
    # a burst of 10, then 5 per second over the 100 s of the flood
    assert allowed <= 10 + 5 * 100 + 1
    assert len(gate) <= 64
