"""The impairment option: parsing, and loss/delay/jitter/duplication on the receive path."""

from __future__ import annotations

import asyncio
import math
import uuid

import pytest

from meshcomm.errors import ConfigError
from radios import ImpairedRadio, Impairment, Radio, open_radio, parse_impairment
from radios.mem import drop_medium
from tests.radios.conftest import Inbox

FRAMES = 2000
#: Acceptance band in standard deviations of the binomial count.
SIGMAS = 4.0

# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", Impairment()),
        ("loss=0.1,delay=15ms,jitter=5ms,dup=0.01",
         Impairment(loss=0.1, delay_s=0.015, jitter_s=0.005, duplicate=0.01)),
        (" dup = 2% , loss=10% ", Impairment(loss=0.1, duplicate=0.02)),
        ("delay=0.2s,jitter=500us", Impairment(delay_s=0.2, jitter_s=0.0005)),
        ("delay=0.25", Impairment(delay_s=0.25)),
        ("loss=1", Impairment(loss=1.0)),
    ],
)
def test_parse_impairment(spec: str, expected: Impairment) -> None:
    got = parse_impairment(spec)
    assert got.loss == pytest.approx(expected.loss)
    assert got.delay_s == pytest.approx(expected.delay_s)
    assert got.jitter_s == pytest.approx(expected.jitter_s)
    assert got.duplicate == pytest.approx(expected.duplicate)


@pytest.mark.parametrize(
    ("spec", "key_path", "fragment"),
    [
        ("loss=1.5", "impairment.loss", "'1.5'"),
        ("loss=abc", "impairment.loss", "'abc'"),
        ("loss=nan", "impairment.loss", "'nan'"),
        ("dup=-0.1", "impairment.dup", "'-0.1'"),
        ("delay=15xs", "impairment.delay", "'15xs'"),
        ("delay=-1ms", "impairment.delay", "'-1ms'"),
        ("jitter=2min", "impairment.jitter", "'2min'"),
        ("jitter=100s", "impairment.jitter", "'100s'"),
        ("lose=0.1", "impairment.lose", "'lose=0.1'"),
        ("loss", "impairment", "'loss'"),
        ("loss=", "impairment", "'loss='"),
        ("loss=0.1,loss=0.2", "impairment.loss", "given twice"),
        ("loss=0.1,,dup=0.1", "impairment", "empty part"),
    ],
)
def test_parse_impairment_errors_name_the_bad_part(spec: str, key_path: str,
                                                   fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_impairment(spec)
    assert info.value.key_path == key_path
    assert fragment in str(info.value)


def test_impairment_validates_direct_construction() -> None:
    with pytest.raises(ConfigError):
        Impairment(loss=2)
    with pytest.raises(ConfigError):
        Impairment(delay_s=math.inf)
    assert Impairment().is_null and not Impairment(duplicate=0.5).is_null


# -- behaviour on the mem driver (any driver would do: the wrapper sits above it) ------------


async def _pair(impairments: list[Impairment | None], seeds: list[int]) -> tuple[
        str, Radio, list[Radio], list[Inbox]]:
    """A clean sender and impaired receivers on a fresh medium."""
    medium = f"impair-{uuid.uuid4().hex[:8]}"
    sender = open_radio(f"mem:{medium}/tx")
    receivers = [
        open_radio(f"mem:{medium}/rx{i}", impairment=imp, seed=seed)
        for i, (imp, seed) in enumerate(zip(impairments, seeds, strict=True))
    ]
    boxes = [Inbox() for _ in receivers]
    await sender.open()
    for radio, box in zip(receivers, boxes, strict=True):
        await radio.open()
        radio.set_receiver(box)
    return medium, sender, receivers, boxes


def _close(medium: str, radios: list[Radio]) -> None:
    for radio in radios:
        radio.close()
    drop_medium(medium)


def _within_binomial(count: int, trials: int, p: float) -> bool:
    sigma = math.sqrt(trials * p * (1 - p))
    return abs(count - trials * p) <= SIGMAS * sigma


def test_loss_is_independent_per_receiver_and_within_bounds() -> None:
    async def scenario() -> tuple[list[set[int]], list[dict[str, int]]]:
        imp = Impairment(loss=0.3)
        medium, tx, rxs, boxes = await _pair([imp, imp, imp], [1, 2, 1])
        try:
            for i in range(FRAMES):
                tx.send(i.to_bytes(2, "big"), None)
            # The medium delivers with call_soon: step the loop until every frame is decided.
            while any(r.counters["rx"] + r.counters["dropped_impair_loss"] < FRAMES
                      for r in rxs):
                await asyncio.sleep(0)
            got = [{int.from_bytes(d, "big") for d in b.payloads} for b in boxes]
            return got, [dict(r.counters) for r in rxs]
        finally:
            _close(medium, [tx, *rxs])

    got, counters = asyncio.run(scenario())
    for kept, counts in zip(got, counters, strict=True):
        assert _within_binomial(FRAMES - len(kept), FRAMES, 0.3)
        assert counts["rx"] + counts["dropped_impair_loss"] == FRAMES
    assert got[0] != got[1]  # receivers lose independently
    assert got[0] == got[2]  # the same seed gives the same losses


def test_duplicates_within_bounds() -> None:
    async def scenario() -> tuple[list[bytes], dict[str, int]]:
        medium, tx, rxs, boxes = await _pair([Impairment(duplicate=0.2)], [7])
        try:
            for i in range(FRAMES):
                tx.send(i.to_bytes(2, "big"), None)
            await boxes[0].wait_for(FRAMES)
            await asyncio.sleep(0)
            return boxes[0].payloads, dict(rxs[0].counters)
        finally:
            _close(medium, [tx, *rxs])

    payloads, counters = asyncio.run(scenario())
    duplicated = counters["impair_duplicated"]
    assert _within_binomial(duplicated, FRAMES, 0.2)
    assert len(payloads) == FRAMES + duplicated == counters["rx"]
    assert set(payloads) == {i.to_bytes(2, "big") for i in range(FRAMES)}


def test_delay_holds_frames_back() -> None:
    delay_s = 0.05

    async def scenario() -> None:
        medium, tx, rxs, boxes = await _pair([Impairment(delay_s=delay_s), None], [3, 0])
        loop = asyncio.get_running_loop()
        try:
            sent_at = loop.time()
            tx.send(b"slow", None)
            await boxes[1].wait_for(1)  # the unimpaired receiver has it already
            assert boxes[0].payloads == []
            impaired = rxs[0]
            assert isinstance(impaired, ImpairedRadio) and impaired.pending_deliveries == 1
            await boxes[0].wait_for(1)
            assert loop.time() - sent_at >= delay_s - 0.001
        finally:
            _close(medium, [tx, *rxs])

    asyncio.run(scenario())


def test_jitter_spreads_delays_within_the_window() -> None:
    delay_s, jitter_s = 0.5, 0.2

    async def scenario() -> tuple[list[float], float]:
        medium, tx, rxs, _ = await _pair([Impairment(delay_s=delay_s, jitter_s=jitter_s)], [5])
        loop = asyncio.get_running_loop()
        impaired = rxs[0]
        assert isinstance(impaired, ImpairedRadio)
        try:
            t0 = loop.time()
            for i in range(200):
                tx.send(bytes([i]), None)
            while impaired.pending_deliveries < 200:
                await asyncio.sleep(0)
            taken = loop.time() - t0      # every frame was taken in by then
            # Scheduled (not measured) delays: deterministic, no waiting for the timers.
            return [h.when() - t0 for h in impaired._pending], taken
        finally:
            _close(medium, [tx, *rxs])

    delays, taken = asyncio.run(scenario())
    assert min(delays) >= delay_s - jitter_s
    # Each frame is held delay +/- jitter from when it was taken in (at most ``taken``
    # after t0, however loaded the machine is).
    assert max(delays) <= delay_s + jitter_s + taken
    assert max(delays) - min(delays) > jitter_s  # actually spread, not constant


def test_close_cancels_held_back_frames() -> None:
    async def scenario() -> None:
        medium, tx, rxs, boxes = await _pair([Impairment(delay_s=30)], [1])
        impaired = rxs[0]
        assert isinstance(impaired, ImpairedRadio)
        try:
            tx.send(b"never", None)
            while impaired.pending_deliveries == 0:
                await asyncio.sleep(0)
            impaired.close()
            assert impaired.pending_deliveries == 0
            assert not impaired.is_open
        finally:
            _close(medium, [tx, *rxs])
        assert boxes[0].payloads == []

    asyncio.run(scenario())
