"""Per-link round-trip estimate (a windowed minimum plus a capped deviation, Karn's rule)
and the retransmission timers that follow it."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.rtt import (
    GRANULARITY_S,
    MAX_SAMPLE_S,
    VAR_CAP_FACTOR,
    VAR_CAP_MIN_S,
    LinkRtt,
)
from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import ScenarioParams, sim_config
from meshcomm.types import LinkAddr
from tests.overlay.test_media import stream_packets

A, B = LinkAddr("radio|a"), LinkAddr("uplink|b")


def test_before_a_sample_the_timeout_is_the_floor() -> None:
    rtt = LinkRtt()
    assert rtt.rto(A, 0.15, 3.0) == 0.15
    assert rtt.srtt(A) is None


def test_first_sample_then_the_windowed_minimum_and_a_capped_deviation() -> None:
    """The first sample gets a wide margin (deviation R/2, as RFC 6298), capped at one
    base (so 2R, not RFC 6298's 3R); steady samples bring it down to base + G; a slower
    sample moves the smoothed RTT by 1/8 (RFC 6298) but the timeout by at most the cap."""
    rtt = LinkRtt()
    rtt.sample(B, 0.2)
    assert abs(rtt.rto(B, 0.01, 3.0) - 0.4) < 1e-9
    for _ in range(200):
        rtt.sample(B, 0.2)
    srtt = rtt.srtt(B)
    assert srtt is not None and abs(srtt - 0.2) < 1e-9
    assert abs(rtt.rto(B, 0.01, 3.0) - (0.2 + GRANULARITY_S)) < 1e-3
    rtt.sample(B, 1.0)
    srtt = rtt.srtt(B)
    assert srtt is not None and abs(srtt - 0.3) < 1e-9
    assert rtt.base(B) == 0.2
    assert rtt.rto(B, 0.01, 3.0) <= 0.2 + 0.2 * VAR_CAP_FACTOR + 1e-9


RADIO = LinkAddr("radio|n1")
INITIAL_S, FLOOR_S, CEILING_S = 0.15, 0.005, 2.0


def _timeout(rtt: LinkRtt, now: float) -> float:
    return rtt.timeout(RADIO, now, initial_s=INITIAL_S, floor_s=FLOOR_S,
                       ceiling_s=CEILING_S)


def test_a_stretched_first_sample_is_forgotten_at_the_next_normal_one() -> None:
    """The CI failure: a busy CPU stretched the first round trip of a radio link to
    1.5 s. One normal sample later the timeout is back to milliseconds."""
    rtt = LinkRtt(window_s=5.0)
    rtt.sample(RADIO, 1.5, now=10.0)
    assert _timeout(rtt, 10.0) == CEILING_S
    rtt.sample(RADIO, 0.003, now=10.5)
    assert _timeout(rtt, 10.5) <= 0.003 + VAR_CAP_MIN_S + 1e-9


def test_stretched_samples_on_a_quiet_link_hold_the_timeout_for_one_window_only() -> None:
    """A few stretched samples and then no traffic (a radio link carries few acks): the
    timeout stays high only while they are fresh; after the window (5 s) it is no more
    than the initial timeout, for as long as the link stays quiet."""
    rtt = LinkRtt(window_s=5.0)
    for i, stretched in enumerate((1.0, 1.2, 0.9)):
        rtt.sample(RADIO, stretched, now=10.0 + i)
    assert _timeout(rtt, 12.5) >= 0.9
    for now in (17.01, 60.0, 600.0):
        assert _timeout(rtt, now) <= INITIAL_S
    # ... and the next clean acknowledgement starts a fresh estimate
    rtt.acked(RADIO, 600.0, False, 600.004)
    assert _timeout(rtt, 600.004) <= 0.004 + VAR_CAP_MIN_S + 1e-9


def test_karn_backoff_reaches_a_round_trip_that_outgrew_the_timeout() -> None:
    """A stale link slower than the initial timeout (a satellite hop after a quiet
    spell: 600 ms): every frame is retransmitted and each ambiguous ack backs the
    link's timeout off, until a frame is acknowledged before its retransmission; that
    clean sample ends the backoff."""
    rtt = LinkRtt(window_s=5.0)
    rtt.sample(RADIO, 0.6, now=0.0)
    now, frames = 100.0, 0
    while _timeout(rtt, now) < 0.6:
        rtt.acked(RADIO, now, True, now + 0.6)      # retransmitted: no sample
        now += 1.0
        frames += 1
        assert frames < 10
    assert frames <= 4                              # 0.15 * 1.5**4 > 0.6
    rtt.acked(RADIO, now, False, now + 0.6)
    assert _timeout(rtt, now + 0.6) == rtt.rto(RADIO, FLOOR_S, CEILING_S)   # backoff 1
    assert abs((rtt.base(RADIO) or 0.0) - 0.6) < 1e-9


def test_a_stretched_sample_amid_traffic_moves_the_timeout_by_the_cap_at_most() -> None:
    rtt = LinkRtt(window_s=5.0)
    now = 0.0
    for _ in range(100):
        now += 0.1
        rtt.sample(RADIO, 0.003, now)
    before = _timeout(rtt, now)
    assert before < 0.006
    rtt.sample(RADIO, 2.0, now + 0.01)                 # one round trip stretched 2 s
    assert _timeout(rtt, now + 0.01) <= 0.003 + VAR_CAP_MIN_S + 1e-9
    for i in range(20):                                 # it decays with normal samples
        rtt.sample(RADIO, 0.003, now + 0.02 + i * 0.1)
    assert _timeout(rtt, now + 2.1) < 0.01


def _spurious(jitter: Callable[[random.Random], float], ack_delay_s: float) -> float:
    """Fraction of 20,000 frames (one per 10 ms) whose ack came later than the timeout
    the forwarder computed when it sent them (estimate + the receiver's ack delay): each
    such frame is retransmitted needlessly. Round trips are 2 ms plus ``jitter``, one in
    200 stretched by a busy CPU (20-60 ms); the receiver holds each ack ``ack_delay_s``."""
    rng = random.Random(3)
    rtt = LinkRtt(window_s=5.0)
    spurious = 0
    now = 0.0
    for _ in range(20_000):
        now += 0.01
        sample = 0.002 + jitter(rng) + ack_delay_s
        if rng.random() < 1 / 200:
            sample += rng.uniform(0.02, 0.06)
        spurious += sample > _timeout(rtt, now) + ack_delay_s
        rtt.sample(RADIO, sample, now + sample)
    assert _timeout(rtt, now) < 0.03 + ack_delay_s      # still fast
    return spurious / 20_000


def test_spurious_retransmissions_stay_rare_on_a_link_with_jitter() -> None:
    assert _spurious(lambda rng: rng.uniform(0, 0.005), 0.0) < 0.01
    # a heavy tail (exponential jitter, mean 3 ms: 1 in 50 above 4 times the mean) with
    # the radio's ack delay, as the forwarder runs it
    assert _spurious(lambda rng: rng.expovariate(1 / 0.003), OverlayConfig().ack_delay_s) \
        < 0.01


def test_floor_and_ceiling_bound_the_timeout() -> None:
    rtt = LinkRtt()
    rtt.sample(A, 0.001)
    assert rtt.rto(A, 0.15, 3.0) == 0.15          # a fast radio keeps its tuning
    rtt.sample(B, 9.0)
    assert rtt.rto(B, 0.15, 3.0) == 3.0


def test_impossible_samples_are_ignored() -> None:
    rtt = LinkRtt()
    for bad in (-0.1, MAX_SAMPLE_S + 1, float("inf"), float("nan")):
        rtt.sample(A, bad)
    assert len(rtt) == 0


def test_the_table_is_bounded_least_recently_sampled_first() -> None:
    rtt = LinkRtt(max_links=3)
    for i in range(10):
        rtt.sample(LinkAddr(f"l{i}"), 0.05)
    rtt.sample(LinkAddr("l7"), 0.05)              # refreshed: kept
    rtt.sample(LinkAddr("new"), 0.05)
    assert len(rtt) == 3
    assert rtt.srtt(LinkAddr("l7")) is not None
    assert rtt.srtt(LinkAddr("l8")) is None


def _sim(params: ScenarioParams, *, adaptive: bool = True) -> Simulator:
    """A simulated chain whose overlay has ``adaptive_rto`` (as a relay's uplink mesh)."""
    config = sim_config(params)
    overlay = dataclasses.replace(config.settings.overlay, adaptive_rto=adaptive)
    config.settings = dataclasses.replace(config.settings, overlay=overlay)
    return Simulator(config)


def _chain(delay_ms: float, seed: int = 2, *, adaptive: bool = True) -> Simulator:
    return _sim(ScenarioParams(topology="chain", nodes=2, loss=0.0, delay_ms=delay_ms,
                               duration_s=60, seed=seed), adaptive=adaptive)


def _media_counters(sim: Simulator) -> tuple[int, int]:
    got = sum(1 for _, name, _ in sim.media if name == "n1")
    sender = sim.core("n0")
    assert sender is not None
    return got, sender.counters["media_retransmits"]


def test_a_slow_hop_learns_its_round_trip_and_stops_resending_every_frame() -> None:
    """A 100 ms hop (200 ms round trip; media_ack_timeout_s is 30 ms): with a fixed
    timeout every frame went out four times. Once the hop's round trip is learned, frames
    go out once: all 300 arrive, and retransmissions stay a small fraction."""
    sim = _chain(delay_ms=100)
    stream_packets(sim, "n0", "n1", 300)
    sim.run()
    got, retransmits = _media_counters(sim)
    assert got == 300
    assert retransmits < 30, retransmits
    sender = sim.core("n0")
    assert sender is not None
    srtt = [sender.overlay.rtt.srtt(link) for link in sender.overlay.neighbours.by_addr]
    assert any(s is not None and 0.19 < s < 0.3 for s in srtt), srtt


def test_on_a_fast_hop_media_retransmits_as_before() -> None:
    """On a 2 ms hop the learned timeout stays at the configured floor: a lost frame is
    retransmitted after media_ack_timeout_s, as before (loss is hidden)."""
    sim = _sim(ScenarioParams(topology="chain", nodes=2, loss=0.1, duration_s=60, seed=5))
    stream_packets(sim, "n0", "n1", 300)
    sim.run()
    got = {int.from_bytes(ev.payload[:4], "big") for _, name, ev in sim.media if name == "n1"}
    assert len(got) >= 297
    _, retransmits = _media_counters(sim)
    assert retransmits > 20


def test_no_copy_is_sent_later_than_the_playout_bound() -> None:
    """A 250 ms hop (500 ms round trip) is slower than media_max_late_s (0.3 s). Until
    its first acknowledgement arrives (the first second of frames), frames are resent;
    after that, never: 200 more frames cost no retransmission, each counted too late."""
    retransmits = []
    for count in (100, 300):
        sim = _chain(delay_ms=250)
        stream_packets(sim, "n0", "n1", count)
        sim.run()
        got, resent = _media_counters(sim)
        assert got == count
        retransmits.append(resent)
        sender = sim.core("n0")
        assert sender is not None
        assert sender.counters["media_too_late"] >= count - 60
    assert retransmits[0] < 3 * 60, retransmits
    assert retransmits[1] == retransmits[0], retransmits


def test_karn_first_sample_from_a_retransmitted_frame_then_only_clean_ones() -> None:
    rtt = LinkRtt()
    rtt.acked(B, 0.0, True, 0.2)                 # no estimate yet: counted from the first copy
    assert rtt.srtt(B) == 0.2
    rtt.acked(B, 1.0, True, 1.03)                # ambiguous: ignored now
    assert rtt.srtt(B) == 0.2
    rtt.acked(B, 2.0, False, 2.25)
    srtt = rtt.srtt(B)
    assert srtt is not None and abs(srtt - (0.2 + 0.05 / 8)) < 1e-9


def test_without_adaptive_rto_the_configured_timeouts_stay() -> None:
    """The island radio's default: fixed timeouts (a slow hop retransmits every frame
    media_retries times, as before), whatever the round trips measured."""
    sim = _chain(delay_ms=100, adaptive=False)
    stream_packets(sim, "n0", "n1", 50)
    sim.run()
    got, retransmits = _media_counters(sim)
    assert got == 50
    assert retransmits == 50 * 3


def test_the_uplink_mesh_config_has_adaptive_timeouts() -> None:
    from meshcomm.overlay.config import OverlayConfig
    assert not OverlayConfig().adaptive_rto
    assert OverlayConfig().for_uplink().adaptive_rto
