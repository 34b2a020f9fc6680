"""The uplink state machine: its table, every state reachable, hysteresis under flapping."""

from __future__ import annotations

import pytest

from meshcomm.dht.uplink import (
    TIMER_INPUT,
    UPLINK_TABLE,
    Uplink,
    UplinkConfig,
    UplinkInput,
    UplinkState,
    uplink_transition,
)
from meshcomm.errors import LocalProtocolError
from tests.state_tables import reachable

CFG = UplinkConfig(min_peers=2, stable_s=10.0, grace_s=30.0)


def test_every_state_reachable_and_samples_total() -> None:
    assert reachable(UPLINK_TABLE, UplinkState.DOWN) == set(UplinkState)
    for state in UplinkState:
        for sample in (UplinkInput.GOOD, UplinkInput.FEW, UplinkInput.NONE):
            assert (state, sample) in UPLINK_TABLE   # a sample never raises
    for state, timer in TIMER_INPUT.items():
        assert (state, timer) in UPLINK_TABLE
    with pytest.raises(LocalProtocolError):
        uplink_transition(UplinkState.UP, UplinkInput.STABLE)


def _drive(up: Uplink, samples: list[tuple[float, int]]) -> list[UplinkState]:
    seen = [up.state]
    for at, good in samples:
        due = up.next_timer()
        if due is not None and due <= at:
            up.on_timer(due)
            seen.append(up.state)
        up.on_peers(good, at)
        seen.append(up.state)
    return seen


def test_down_joining_up_grace_down() -> None:
    up = Uplink(CFG, 0.0)
    assert up.on_peers(1, 0.0) is None and up.state is UplinkState.DOWN  # too few
    change = up.on_peers(3, 1.0)
    assert change is not None and change.state is UplinkState.JOINING and not up.is_up
    assert up.next_timer() == 11.0
    up.on_peers(3, 5.0)
    assert up.on_timer(10.9) is None
    change = up.on_timer(11.0)
    assert change is not None and change.previous is UplinkState.JOINING and up.is_up
    up.on_peers(1, 12.0)                       # some peers still: stays up
    assert up.state is UplinkState.UP
    up.on_peers(0, 13.0)
    assert up.state is UplinkState.GRACE and up.is_up and up.next_timer() == 43.0
    up.on_peers(1, 20.0)                       # one returns: up again at once
    assert up.state is UplinkState.UP and up.next_timer() is None
    up.on_peers(0, 21.0)
    change = up.on_timer(51.0)
    assert change is not None and up.state is UplinkState.DOWN and up.since == 51.0


def test_joining_starts_over_on_a_bad_sample() -> None:
    up = Uplink(CFG, 0.0)
    up.on_peers(2, 0.0)
    up.on_peers(0, 9.0)
    assert up.state is UplinkState.DOWN and up.next_timer() is None
    change = up.on_peers(2, 9.5)
    assert change is not None and change.state is UplinkState.JOINING
    assert up.on_timer(10.0) is None
    change = up.on_timer(19.5)
    assert change is not None and change.state is UplinkState.UP


def _flapping(start_good: bool) -> list[tuple[float, int]]:
    """Peers toggling every 2 s for 60 s."""
    out = []
    for step in range(31):
        good = (step % 2 == 0) == start_good
        out.append((100.0 + 2.0 * step, 3 if good else 0))
    return out


def test_flapping_never_brings_the_mode_up() -> None:
    up = Uplink(CFG, 100.0)
    seen = _drive(up, _flapping(start_good=True))
    assert all(s in (UplinkState.DOWN, UplinkState.JOINING) for s in seen)
    assert not up.is_up


def test_flapping_never_takes_the_mode_down() -> None:
    up = Uplink(CFG, 0.0)
    up.on_peers(3, 0.0)
    up.on_timer(10.0)
    assert up.state is UplinkState.UP
    seen = _drive(up, _flapping(start_good=False))
    assert UplinkState.GRACE in seen
    assert all(s in (UplinkState.UP, UplinkState.GRACE) for s in seen)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        UplinkConfig(min_peers=0)
    with pytest.raises(ValueError):
        UplinkConfig(grace_s=0)
