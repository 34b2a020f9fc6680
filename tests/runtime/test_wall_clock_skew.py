"""A node run with a wrong wall clock (the test option behind ``--wall-clock-skew``, for
the after-action export's clock estimation): its journal's wall stamps and its binding's
issue time run that far from the system clock; its monotonic clock does not."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from meshcomm.journal.store import JournalStore
from meshcomm.runtime.app import JOURNAL_FILE, run_node
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from tests.runtime.helpers import chain_medium, ctl, node_options, wait_until

SKEW_S = 2 * 3600.0


def test_a_skewed_node_stamps_its_journal_and_bindings_hours_ahead(tmp_path: Path) -> None:
    up: list[tuple[NodeDriver, NodeInfo]] = []

    async def scenario() -> float:
        with chain_medium(["x"]) as medium:
            options = dataclasses.replace(
                node_options(tmp_path, f"mem:{medium.name}/x", "skewed"),
                wall_clock_skew_s=SKEW_S)
            task = asyncio.create_task(run_node(options, lambda d, i: up.append((d, i))))
            await wait_until(lambda: bool(up), "node up")
            driver, info = up[0]
            await wait_until(lambda: bool(driver.node.table.lookup(info.aor)), "registered")
            (stored,) = driver.node.table.lookup(info.aor)
            issued = stored.binding.issued_at
            await asyncio.to_thread(ctl, tmp_path, "stop")
            assert await task == 0
            return issued

    issued = asyncio.run(scenario())
    now = time.time()
    assert abs(issued - (now + SKEW_S)) < 60.0
    with JournalStore.open(tmp_path / JOURNAL_FILE, up[0][1].node_id) as store:
        walls = [e.wall_s for e in store.entries()]
    assert walls and all(abs(w - (now + SKEW_S)) < 60.0 for w in walls)


def test_a_skew_that_is_not_a_number_or_beyond_a_day_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from meshcomm.cli.main import main

    for bad in ("nan", "inf", "90000"):
        assert main(["handset", "--radio", "mem:skew/x", "--data-dir", str(tmp_path),
                     "--wall-clock-skew", bad]) == 2
        assert "--wall-clock-skew must be within" in capsys.readouterr().err
