"""tools/bench/dht.py: the bridge-policy retry, the miss accounting and a small real run."""

from __future__ import annotations

import asyncio
from collections import Counter

from tools.bench import dht


def test_attempt_retries_a_miss_once_after_the_wait_and_times_the_whole() -> None:
    calls: list[float] = []

    async def scenario() -> tuple[dht.Attempt, dht.Attempt, dht.Attempt]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(1)

        async def miss_then_find() -> bool:
            calls.append(loop.time())
            return len(calls) > 1

        async def never() -> bool:
            return False

        misses: Counter[str] = Counter()
        rescued = await dht.attempt(miss_then_find, 1.0, gate, misses, 0.2)
        plain = await dht.attempt(never, 1.0, gate, misses, None)
        lost = await dht.attempt(never, 1.0, gate, misses, 0.05)
        assert not misses                  # no deadline passed
        return rescued, plain, lost

    rescued, plain, lost = asyncio.run(scenario())
    assert (rescued.first_ok, rescued.ok) == (False, True)
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.2
    assert rescued.ms >= 200.0 > rescued.first_ms
    assert (plain.ok, plain.first_ok, lost.ok, lost.first_ok) == (False, False, False, False)


def test_a_lookup_past_the_deadline_counts_as_a_deadline_miss() -> None:
    async def scenario() -> tuple[dht.Attempt, Counter[str]]:
        async def hang() -> bool:
            await asyncio.sleep(10)
            return True

        misses: Counter[str] = Counter()
        # deadline: the port's timeout (0.05 s) plus DEADLINE_MARGIN_S
        result = await dht.attempt(hang, 0.05, asyncio.Semaphore(1), misses, None)
        return result, misses

    result, misses = asyncio.run(scenario())
    assert not result.ok and misses == Counter({dht.DEADLINE: 1})
    assert result.first_ms >= (0.05 + dht.DEADLINE_MARGIN_S) * 1000.0


def test_opendht_rows_from_one_small_real_run() -> None:
    rows = asyncio.run(dht.run_one(dht.OpenDhtHarness(5.0), 12, 8, 1, 5.0, retry_s=0.1))
    assert [r.impl for r in rows] == ["opendht-port", "opendht-port+retry"]
    plain, retry = rows
    assert plain.nodes == 12 and plain.killed == 2
    assert plain.store_ok == 1.0 and plain.lookup_ok == 1.0
    assert set(plain.misses) <= {dht.NO_VALUE, dht.GET_FAILED, dht.GET_TIMEOUT, dht.REFUSED,
                                 dht.DEADLINE}
    # The retry row can only add successes to the first tries'.
    assert retry.lookup_ok >= plain.lookup_ok and retry.churn_ok >= plain.churn_ok
    assert retry.misses == plain.misses
    assert dht.format_table(rows).count("\n") == 2
