"""Trickle timers (RFC 6206) for HELLOs and digests (issue 13.3): the timer itself, the
announced beacon interval on the wire, and neighbours judged by that interval."""

from __future__ import annotations

import itertools
import random

import pytest

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.overlay.config import OverlayConfig
from meshcomm.overlay.neighbours import TIMEOUT_INTERVALS, NeighbourTable
from meshcomm.overlay.trickle import Beacon, Fired, Trickle
from meshcomm.overlay.witness import (
    MAX_HELLO_INTERVAL_MS,
    decode_hello_untrusted,
    hello_interval_untrusted,
    hello_payload,
)
from meshcomm.types import LinkAddr, NodeId


def run(timer: Trickle, until: float, *, consistent_every: float | None = None,
        resets: tuple[float, ...] = (), urgent: bool = False) -> list[tuple[float, Fired]]:
    """Drive ``timer`` to ``until``: (time, outcome) of every transmission decision.
    ``consistent_every``: a consistent message heard that often; ``resets``: times of
    inconsistencies."""
    out: list[tuple[float, Fired]] = []
    events = sorted([(t, "reset") for t in resets]
                    + ([(k * consistent_every, "ok") for k in
                        range(1, int(until / consistent_every) + 1)]
                       if consistent_every else []))
    while True:
        nxt = timer.next_at()
        if events and events[0][0] < nxt:
            at, what = events.pop(0)
            if what == "reset":
                timer.inconsistent(at, urgent=urgent)
            else:
                timer.heard_consistent()
            continue
        if nxt > until:
            return out
        fired = timer.due(nxt)
        if fired is not Fired.NOTHING:
            out.append((nxt, fired))


def test_interval_doubles_from_imin_to_imax_while_consistent() -> None:
    timer = Trickle(2.0, 4, 0, random.Random(1), 0.0, hold_intervals=0)   # RFC 6206 as is
    assert timer.imax_s == 32.0
    sent: list[tuple[float, float, float]] = []     # (time, interval start, length)
    while (t := timer.next_at()) < 200.0:
        start, length = timer.started_at, timer.interval_s
        if timer.due(t) is Fired.TRANSMIT:
            sent.append((t, start, length))
    assert [length for _, _, length in sent] == [2, 4, 8, 16, 32, 32, 32, 32, 32][:len(sent)]
    assert len(sent) == 9          # 2+4+8+16 = 30 s, then 32 s intervals up to 200 s
    for at, start, length in sent:  # one transmission per interval, in [I/2, I)
        assert start + length / 2 <= at < start + length


def test_after_an_inconsistency_imin_is_held_for_a_few_intervals() -> None:
    timer = Trickle(2.0, 4, 0, random.Random(11), 0.0, hold_intervals=2)
    lengths = []
    while (t := timer.next_at()) < 100.0:
        length = timer.interval_s
        if timer.due(t) is Fired.TRANSMIT:
            lengths.append(length)
    assert lengths[:6] == [2, 2, 2, 4, 8, 16]


def test_reset_goes_back_to_imin_and_does_nothing_at_imin() -> None:
    timer = Trickle(2.0, 5, 0, random.Random(2), 0.0)
    run(timer, 100.0)
    assert timer.interval_s == 64.0
    assert timer.inconsistent(100.5) is True
    assert timer.interval_s == 2.0 and timer.started_at == 100.5
    assert 101.5 <= timer.next_at() < 102.5
    gen = timer.generation
    assert timer.inconsistent(100.7) is False      # already at Imin: no new deadline
    assert timer.generation == gen and timer.resets == 1


def test_k_consistent_messages_suppress_and_an_inconsistency_unsuppresses() -> None:
    timer = Trickle(2.0, 3, 2, random.Random(3), 0.0)
    sent = run(timer, 60.0, consistent_every=0.05)   # many consistent ones per interval
    assert sent and all(f is Fired.SUPPRESSED for _, f in sent)
    quiet = Trickle(2.0, 3, 2, random.Random(3), 0.0)
    assert all(f is Fired.TRANSMIT for _, f in run(quiet, 60.0))
    # at Imin, a differing message heard keeps this interval's transmission
    timer = Trickle(2.0, 3, 2, random.Random(4), 0.0)
    timer.heard_consistent()
    timer.heard_consistent()
    timer.inconsistent(0.1)
    assert timer.due(timer.next_at()) is Fired.TRANSMIT


def test_an_interval_with_an_inconsistency_is_not_doubled() -> None:
    timer = Trickle(2.0, 4, 0, random.Random(5), 0.0)
    for k in range(10):          # an inconsistency heard in every interval: stays at Imin
        timer.inconsistent(k * 2.0 + 0.01)
        while timer.next_at() <= (k + 1) * 2.0:
            timer.due(timer.next_at())
    assert timer.interval_s == 2.0


def test_a_hostile_reset_storm_costs_no_more_than_the_fixed_rate() -> None:
    """Inconsistencies every 50 ms (urgent ones too) for 10 minutes: at most one
    transmission per min gap, as with fixed beacons (0.75 Imin: the shortest jittered
    period)."""
    for urgent in (False, True):
        timer = Trickle(2.0, 4, 0, random.Random(6), 0.0, min_gap_s=1.5)
        resets = tuple(k * 0.05 for k in range(1, 12_000))
        sent = [t for t, f in run(timer, 600.0, resets=resets, urgent=urgent)
                if f is Fired.TRANSMIT]
        gaps = [b - a for a, b in itertools.pairwise(sent)]
        assert min(gaps) >= 1.5 - 1e-9
        assert len(sent) <= 600 / 1.5 + 1


def test_urgent_reset_sends_at_once_gap_allowing() -> None:
    timer = Trickle(2.0, 4, 0, random.Random(7), 0.0, min_gap_s=1.5)
    run(timer, 100.0)
    last = timer.last_tx
    assert timer.inconsistent(100.0, urgent=True)
    assert timer.next_at() >= last + 1.5 - 1e-9
    assert timer.next_at() <= max(100.1, last + 1.5)
    assert timer.due(timer.next_at()) is Fired.TRANSMIT


def test_next_transmission_comes_within_one_and_a_half_announced_bounds() -> None:
    """What a HELLO announces (bound_s) holds: the next one follows within 1.5x, also
    while doubling and across resets."""
    rng = random.Random(8)
    timer = Trickle(2.0, 4, 0, rng, 0.0, min_gap_s=1.5)
    resets = tuple(sorted(rng.uniform(0, 2000) for _ in range(40)))
    sent: list[tuple[float, float]] = []
    t = 0.0
    while t < 2000:
        while resets and resets[0] < timer.next_at():
            timer.inconsistent(resets[0])
            resets = resets[1:]
        t = timer.next_at()
        if timer.due(t) is Fired.TRANSMIT:
            sent.append((t, timer.bound_s()))
    for (at, bound), (nxt, _) in itertools.pairwise(sent):
        assert nxt - at <= 1.5 * bound + 1e-9


def test_fixed_beacon_keeps_the_jittered_period_and_ignores_resets() -> None:
    beacon = Beacon(2.0, random.Random(9), 0.0, trickle=False, jitter=0.25,
                    first_s=(0.0, 0.2))
    times = []
    while (t := beacon.next_at()) < 100:
        if beacon.due(t) is Fired.TRANSMIT:
            times.append(t)
        assert beacon.inconsistent(t) is False
    assert times[0] <= 0.2
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(1.5 <= g <= 2.5 for g in gaps)
    assert beacon.announced_s() is None


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        Trickle(0.0, 3, 0, random.Random(), 0.0)
    with pytest.raises(LocalProtocolError):
        Trickle(1.0, 99, 0, random.Random(), 0.0)
    with pytest.raises(LocalProtocolError):
        Trickle(1.0, 3, 0, random.Random(), 0.0, min_gap_s=2.0)


def test_config_validates_the_trickle_fields() -> None:
    assert OverlayConfig().validate() == []
    bad = OverlayConfig(trickle_hello_doublings=11, trickle_digest_doublings=-1,
                        trickle_digest_k=0)
    names = {name for name, _ in bad.validate()}
    assert {"trickle_hello_doublings", "trickle_digest_doublings", "trickle_digest_k"} <= names
    huge = OverlayConfig(hello_interval_s=100.0, neighbour_timeout_s=400.0,
                         trickle_hello_doublings=3)
    assert ("trickle_hello_doublings" in {n for n, _ in huge.validate()})
    assert OverlayConfig().for_uplink().trickle is False


# ------------------------------------------------------------------ wire
def test_hello_announces_its_interval_and_old_hellos_still_decode() -> None:
    payload = hello_payload(7, "relay", [[b"abcd", 200]], None, 32.0)
    assert payload == [7, "relay", [[b"abcd", 200]], None, 32_000]
    base, cp = decode_hello_untrusted(payload)
    assert base == [7, "relay", [[b"abcd", 200]]] and cp is None
    assert hello_interval_untrusted(payload) == 32.0
    old = [7, "relay", []]
    assert hello_interval_untrusted(old) is None and decode_hello_untrusted(old)[1] is None
    assert hello_payload(7, "relay", [], None, None) == old


@pytest.mark.parametrize("value", [0, -1, MAX_HELLO_INTERVAL_MS + 1, 2.5, True, "32", None])
def test_announced_interval_out_of_range_is_a_decode_error(value: object) -> None:
    with pytest.raises(DecodeError):
        decode_hello_untrusted([1, "handset", [], None, value])
    with pytest.raises(DecodeError):
        hello_interval_untrusted([1, "handset", [], None, value])


# ------------------------------------------------------------------ neighbours
def table() -> NeighbourTable:
    return NeighbourTable(2.0, 7.0, 0.125, max_interval_s=32.0)


def hear(t: NeighbourTable, no: int, now: float, interval: float | None) -> None:
    t.upsert(node_id=NodeId(b"n" * 32), key=b"k" * 32, addr=LinkAddr("a"), role="handset",
             hello_no=no, seq=no, now=now, interval_s=interval)


def test_a_quiet_neighbour_is_not_declared_dead_nor_rated_poor() -> None:
    t = table()
    for k in range(10):
        hear(t, k + 1, k * 2.0, 2.0)
    hear(t, 11, 30.0, 32.0)                    # backed off: HELLOs up to 48 s apart now
    nb = t.get(LinkAddr("a"))
    assert nb is not None and nb.interval_s == 32.0
    q = nb.quality(30.0, 2.0)
    assert t.expire(30.0 + 100.0) == []        # 3.5 x 32 = 112 s
    assert nb.quality(30.0 + 60.0, 2.0) == q   # no HELLO overdue yet
    assert t.expire(30.0 + TIMEOUT_INTERVALS * 32.0 + 0.1) == [nb]


def test_a_hostile_huge_interval_is_capped_at_our_imax() -> None:
    t = table()
    hear(t, 1, 0.0, MAX_HELLO_INTERVAL_MS / 1000)
    nb = t.get(LinkAddr("a"))
    assert nb is not None and nb.interval_s == 32.0
    assert t.expire(TIMEOUT_INTERVALS * 32.0 + 0.1) == [nb]


def test_without_an_announced_interval_the_fixed_timeout_holds() -> None:
    t = table()
    hear(t, 1, 0.0, None)
    assert t.expire(6.9) == []
    assert len(t.expire(7.1)) == 1


def test_missed_hellos_count_by_their_counter_whatever_the_interval() -> None:
    fast, slow = table(), table()
    for k in range(1, 40):             # every other HELLO lost: same estimate at 2 s or 32 s
        if k % 2:
            hear(fast, k, k * 2.0, 2.0)
            hear(slow, k, k * 32.0, 32.0)
    qf = fast.get(LinkAddr("a"))
    qs = slow.get(LinkAddr("a"))
    assert qf is not None and qs is not None
    assert qf.q_fwd == pytest.approx(qs.q_fwd)
    assert 0.4 < qs.q_fwd < 0.6


def test_a_new_link_leaves_the_prior_within_a_few_hellos_at_any_interval() -> None:
    """The estimate is the mean over the HELLOs heard while its window fills: with quiet
    Trickle HELLOs a good new link is rated good after 5 HELLOs, not after ~13."""
    t = table()
    for k in range(1, 6):
        hear(t, k, k * 32.0, 32.0)
    nb = t.get(LinkAddr("a"))
    assert nb is not None and nb.q_fwd > 0.9
    lossy = table()
    for k in range(1, 60, 2):          # every other HELLO lost from the start
        hear(lossy, k, k * 2.0, 2.0)
    nb = lossy.get(LinkAddr("a"))
    assert nb is not None and nb.q_fwd < 0.6
