"""Per-link round-trip estimate (RFC 6298) and the retransmission timers that follow it."""

from __future__ import annotations

import dataclasses

from meshcomm.overlay.rtt import GRANULARITY_S, MAX_SAMPLE_S, LinkRtt
from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import ScenarioParams, sim_config
from meshcomm.types import LinkAddr
from tests.overlay.test_media import stream_packets

A, B = LinkAddr("radio|a"), LinkAddr("uplink|b")


def test_before_a_sample_the_timeout_is_the_floor() -> None:
    rtt = LinkRtt()
    assert rtt.rto(A, 0.15, 3.0) == 0.15
    assert rtt.srtt(A) is None


def test_first_sample_then_smoothing_as_rfc_6298() -> None:
    rtt = LinkRtt()
    rtt.sample(B, 0.2)
    # SRTT = R, RTTVAR = R/2: RTO = 0.2 + 4 * 0.1
    assert abs(rtt.rto(B, 0.01, 3.0) - 0.6) < 1e-9
    for _ in range(200):
        rtt.sample(B, 0.2)
    srtt = rtt.srtt(B)
    assert srtt is not None and abs(srtt - 0.2) < 1e-9
    # the variance decays: the timeout comes down to SRTT + G
    assert abs(rtt.rto(B, 0.01, 3.0) - (0.2 + GRANULARITY_S)) < 1e-3
    # a slower sample moves it up, by 1/8 of the difference
    rtt.sample(B, 1.0)
    srtt = rtt.srtt(B)
    assert srtt is not None and abs(srtt - 0.3) < 1e-9


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
