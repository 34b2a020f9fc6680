"""Clock offsets from send/receive pairs (meshcomm/export/clocks.py): devices hours apart
are estimated within the transit times, no corrected receipt precedes its send, and
contradictory bounds are reported, not hidden."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from meshcomm.export.clocks import Exchange, estimate_offsets, pair_bounds


def _traffic(true_offsets: dict[str, float], rng: random.Random, messages: int,
             max_delay_s: float) -> list[Exchange]:
    """Messages between random pairs over a chain a-b-c-..., transit 1 ms .. max_delay."""
    names = sorted(true_offsets)
    out = []
    for _ in range(messages):
        i = rng.randrange(len(names) - 1)
        s, r = (names[i], names[i + 1]) if rng.random() < 0.5 else (names[i + 1], names[i])
        t = rng.uniform(0, 3600)
        delay = rng.uniform(0.001, max_delay_s)
        out.append(Exchange(s, r, t + true_offsets[s], t + delay + true_offsets[r]))
    return out


def test_hours_apart_are_estimated_within_the_transit_times() -> None:
    rng = random.Random(1)
    true = {"a": 0.0, "b": 7200.25, "c": -3 * 3600.0, "d": 12.5, "e": 0.0}
    exchanges = _traffic(true, rng, 2000, max_delay_s=0.2)
    est = estimate_offsets(exchanges, "a")
    assert est.consistent
    for device, offset in true.items():
        got = est.offsets[device]
        assert abs(got.offset_s - offset) <= 0.05, (device, got)
        assert got.uncertainty_s < 0.05 * (1 + "abcde".index(device))
    for ex in exchanges:                        # no receipt before its send, corrected
        send, recv = est.corrected(ex.sender, ex.send), est.corrected(ex.receiver, ex.recv)
        assert send is not None and recv is not None and recv >= send


@given(st.lists(st.floats(-1e5, 1e5), min_size=2, max_size=6), st.integers(0, 2**32))
def test_never_a_causality_violation(offsets: list[float], seed: int) -> None:
    true = {f"n{i}": o for i, o in enumerate(offsets)}
    exchanges = _traffic(true, random.Random(seed), 60, max_delay_s=2.0)
    est = estimate_offsets(exchanges, "n0")
    assert est.consistent
    for ex in exchanges:
        send, recv = est.corrected(ex.sender, ex.send), est.corrected(ex.receiver, ex.recv)
        if send is not None and recv is not None:
            assert recv >= send - 1e-6


def test_contradictory_bounds_are_reported_and_strangers_get_no_offset() -> None:
    # b's clock stepped back an hour between two messages: the bounds cannot both hold.
    exchanges = [Exchange("a", "b", 100.0, 100.1), Exchange("b", "a", 50.0, 3700.0),
                 Exchange("a", "b", 200.0, 200.1 - 3600.0), Exchange("b", "a", 60.0, 60.05)]
    est = estimate_offsets(exchanges, "a")
    assert not est.consistent
    assert set(est.offsets) == {"a", "b"}
    assert estimate_offsets([Exchange("x", "y", 1.0, 2.0)], "a").offsets == {
        "a": estimate_offsets([], "a").offsets["a"]}
    assert pair_bounds([Exchange("a", "a", 1.0, 0.0)]) == {}
