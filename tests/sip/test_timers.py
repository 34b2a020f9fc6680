"""RFC 3261 Table 4 timers derived from T1/T2/T4."""

from __future__ import annotations

import pytest

from meshcomm.errors import ConfigError
from meshcomm.sip.timers import TimerConfig, TimerName


def test_rfc_defaults_reproduce_table_4() -> None:
    cfg = TimerConfig(t1_s=0.5, t2_s=4.0, t4_s=5.0)
    assert cfg.duration_s(TimerName.A) == 0.5
    assert cfg.duration_s(TimerName.B) == 32.0
    assert cfg.duration_s(TimerName.D) == 32.0
    assert cfg.duration_s(TimerName.E) == 0.5
    assert cfg.duration_s(TimerName.F) == 32.0
    assert cfg.duration_s(TimerName.G) == 0.5
    assert cfg.duration_s(TimerName.H) == 32.0
    assert cfg.duration_s(TimerName.I) == 5.0
    assert cfg.duration_s(TimerName.J) == 32.0
    assert cfg.duration_s(TimerName.K) == 5.0
    assert cfg.duration_s(TimerName.C) > 180.0 - 1e-9


def test_radio_defaults_are_slower_than_rfc() -> None:
    cfg = TimerConfig()
    assert cfg.t1_s > 0.5 and cfg.t2_s >= 4.0 and cfg.t4_s >= 5.0
    assert cfg.timer_b_s == 64 * cfg.t1_s
    assert cfg.timer_d_s >= 32.0


def test_retransmit_intervals_double_and_cap() -> None:
    cfg = TimerConfig(t1_s=0.5, t2_s=4.0, t4_s=5.0)
    interval = cfg.timer_e_s
    seen = []
    for _ in range(6):
        interval = cfg.next_retransmit_interval_s(TimerName.E, interval)
        seen.append(interval)
    assert seen == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert cfg.next_retransmit_interval_s(TimerName.A, 4.0) == 8.0  # A is not capped
    with pytest.raises(ValueError):
        cfg.next_retransmit_interval_s(TimerName.B, 1.0)


@pytest.mark.parametrize("kwargs,key", [
    ({"t1_s": 0.0}, "sip.timers.t1_s"),
    ({"t2_s": -1.0}, "sip.timers.t2_s"),
    ({"t1_s": 2.0, "t2_s": 1.0}, "sip.timers.t2_s"),
    ({"t4_s": 1000.0}, "sip.timers.t4_s"),
])
def test_invalid_config_names_the_key(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        TimerConfig(**kwargs)
    assert info.value.key_path == key
