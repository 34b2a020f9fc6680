"""Checkpoint witnesses between two real in-process nodes (issue 11): the runtime hands
each signed journal checkpoint to the overlay, a neighbour hears it with a HELLO and
journals ``journal.witnessed``, whose head is the entry hash the signer's journal holds."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from meshcomm.config import config_with_overrides
from meshcomm.journal.chain import checkpoint_message
from meshcomm.journal.events import JournalEventType
from meshcomm.journal.store import JournalStore
from meshcomm.runtime import app
from meshcomm.runtime.app import JOURNAL_FILE, NodeOptions, run_node
from meshcomm.runtime.control import CONTROL_SOCKET_FILE, control_request
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.security.identity import verify_signature
from tests.runtime.helpers import chain_medium, wait_until
from tests.runtime.test_app import _options as _app_options


def _options(data_dir: Path, specs: tuple[str, ...], name: str | None = None) -> NodeOptions:
    base = _app_options(data_dir, specs, name)
    return dataclasses.replace(base, config=config_with_overrides(
        base.config, {"overlay.witness_interval_s": 0.5}))


def test_a_neighbour_witnesses_the_checkpoints_a_node_writes(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setattr(app, "CHECKPOINT_INTERVAL_S", 0.5)
    dirs = [tmp_path / "a", tmp_path / "b"]
    infos: dict[str, NodeInfo] = {}
    drivers: dict[str, NodeDriver] = {}

    def ready(key: str) -> Callable[[NodeDriver, NodeInfo], None]:
        def cb(driver: NodeDriver, info: NodeInfo) -> None:
            infos[key], drivers[key] = info, driver
        return cb

    async def scenario() -> tuple[int, int]:
        with chain_medium(["a", "b"]) as medium:
            async with asyncio.TaskGroup() as tg:
                ta = tg.create_task(run_node(_options(dirs[0], (f"mem:{medium.name}/a",)),
                                             ready("a")))
                tb = tg.create_task(run_node(_options(dirs[1], (f"mem:{medium.name}/b",),
                                                      name="bravo"), ready("b")))
                await wait_until(lambda: len(infos) == 2, "both nodes up")
                await wait_until(lambda: all(d.node.counters["witness_journaled"] >= 2
                                             for d in drivers.values()),
                                 "each node witnessed two of the other's checkpoints")
                for d in dirs:
                    await asyncio.to_thread(control_request, d / CONTROL_SOCKET_FILE, "stop")
                return await ta, await tb

    assert asyncio.run(scenario()) == (0, 0)
    a_id, a_key = infos["a"].node_id, infos["a"].public_key
    with JournalStore.open(dirs[1] / JOURNAL_FILE, infos["b"].node_id) as store:
        seen = [e.data for e in store.entries() if e.type == JournalEventType.WITNESSED]
    with JournalStore.open(dirs[0] / JOURNAL_FILE, a_id) as store:
        hashes = {e.seq: e.entry_hash for e in store.entries()}
    assert len(seen) >= 2
    for data in seen:
        assert data["node"] == a_id.hex()
        seq, head, sig = data["seq"], data["head"], data["sig"]
        assert isinstance(seq, int) and isinstance(head, str) and isinstance(sig, str)
        assert hashes[seq].hex() == head                  # what a's journal holds there
        assert verify_signature(a_key, checkpoint_message(a_id, seq, bytes.fromhex(head)),
                                bytes.fromhex(sig))
