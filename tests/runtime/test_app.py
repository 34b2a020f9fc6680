"""run_node in-process: two nodes on a mem medium, control socket, stop, restart, errors."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from meshcomm.config import NodeConfig, config_with_overrides
from meshcomm.journal.events import JournalEventType
from meshcomm.journal.store import JournalStore
from meshcomm.journal.verify import verify_journal
from meshcomm.runtime.app import (
    JOURNAL_FILE,
    NodeOptions,
    StartupError,
    data_dir_locked,
    radio_seed,
    run_node,
)
from meshcomm.runtime.control import CONTROL_SOCKET_FILE, control_request
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.security.keystore import load_or_create_identity
from tests.runtime.helpers import chain_medium, wait_until

FAST = {"overlay.hello_interval_s": 0.2, "overlay.neighbour_timeout_s": 1.0,
        "overlay.anti_entropy_interval_s": 0.4, "sip.udp_port": 0, "sip.tcp_port": 0}


def _options(data_dir: Path, specs: tuple[str, ...], name: str | None = None) -> NodeOptions:
    overrides: dict[str, object] = dict(FAST)
    if name is not None:
        overrides["node.name"] = name
    cfg = config_with_overrides(NodeConfig(), overrides)
    return NodeOptions(config=cfg, data_dir=data_dir, radio_specs=specs, hostname="bench.lab",
                       shutdown_grace_s=0.3, seed=7)


def _who(data_dir: Path) -> set[str]:
    return {e["aor"] for e in control_request(data_dir / CONTROL_SOCKET_FILE, "who")}


async def _who_async(data_dir: Path) -> set[str]:
    return await asyncio.to_thread(_who, data_dir)


def test_two_nodes_register_see_each_other_and_stop_cleanly(tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    infos: dict[str, NodeInfo] = {}
    seen: dict[str, set[str]] = {}

    def ready(key: str) -> Callable[[NodeDriver, NodeInfo], None]:
        def cb(driver: NodeDriver, info: NodeInfo) -> None:
            infos[key] = info
        return cb

    async def scenario() -> tuple[int, int]:
        with chain_medium(["a", "b"]) as medium:
            async with asyncio.TaskGroup() as tg:
                ta = tg.create_task(run_node(_options(dirs[0], (f"mem:{medium.name}/a",)),
                                             ready("a")))
                tb = tg.create_task(run_node(_options(dirs[1], (f"mem:{medium.name}/b",),
                                                      name="bravo"),
                                             ready("b")))
                await wait_until(lambda: len(infos) == 2, "both nodes up")
                want = {infos["a"].aor, infos["b"].aor}
                for _ in range(500):
                    seen["a"], seen["b"] = await _who_async(dirs[0]), await _who_async(dirs[1])
                    if seen["a"] == want and seen["b"] == want:
                        break
                    await asyncio.sleep(0.02)
                assert seen["a"] == seen["b"] == want
                assert data_dir_locked(dirs[0])
                with pytest.raises(StartupError, match="another meshcomm node is running"):
                    await run_node(_options(dirs[0], (f"mem:{medium.name}/x",)))
                await asyncio.to_thread(control_request, dirs[0] / CONTROL_SOCKET_FILE, "stop")
                code_a = await ta
                for _ in range(500):
                    if infos["a"].aor not in await _who_async(dirs[1]):
                        break
                    await asyncio.sleep(0.02)
                assert await _who_async(dirs[1]) == {infos["b"].aor}
                await asyncio.to_thread(control_request, dirs[1] / CONTROL_SOCKET_FILE, "stop")
                return code_a, await tb

    assert asyncio.run(scenario()) == (0, 0)
    ident_a, created = load_or_create_identity(dirs[0])
    assert not created and ident_a.node_id == infos["a"].node_id
    assert infos["a"].aor == f"sip:bench-{ident_a.node_id[:4].hex()}@incident.local"
    assert infos["b"].aor == "sip:bravo@incident.local"
    assert infos["a"].contact == f"sip:bench-{ident_a.node_id[:4].hex()}@" \
                                 f"{ident_a.node_id[:4].hex()}.mesh"
    for d in dirs:
        assert not (d / CONTROL_SOCKET_FILE).exists()
        assert not data_dir_locked(d)
    report = verify_journal(dirs[0] / JOURNAL_FILE, ident_a.public_key)
    assert report.ok and report.checkpoints == 1
    with JournalStore.open(dirs[0] / JOURNAL_FILE, ident_a.node_id) as store:
        types = [e.type for e in store.entries()]
    assert JournalEventType.NODE_STOPPED in types
    assert types[-1] == JournalEventType.CHECKPOINT


def test_restart_continues_identity_epoch_and_journal(tmp_path: Path) -> None:
    infos: list[NodeInfo] = []
    heads: list[int] = []

    async def once(medium: str) -> int:
        def ready(driver: NodeDriver, info: NodeInfo) -> None:
            infos.append(info)
            assert driver.journal is not None
            heads.append(driver.flush_journal())
            # the node's own SIGTERM handler must turn this into a clean stop
            driver.loop.call_soon(os.kill, os.getpid(), signal.SIGTERM)
        return await run_node(_options(tmp_path, (f"mem:{medium}/a",)), ready)

    with chain_medium(["a"]) as medium:
        assert asyncio.run(once(medium.name)) == 0
        assert asyncio.run(once(medium.name)) == 0
    assert infos[0].node_id == infos[1].node_id
    assert (infos[0].boot_epoch, infos[1].boot_epoch) == (1, 2)
    assert heads[1] > heads[0]
    report = verify_journal(tmp_path / JOURNAL_FILE, infos[0].public_key)
    assert report.ok and report.checkpoints == 2


def test_no_radio_is_a_clear_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="no radio: give --radio"):
        asyncio.run(run_node(_options(tmp_path, ())))
    assert not data_dir_locked(tmp_path)


def test_missing_interface_is_a_clear_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="no network interface 'nosuch9'"):
        asyncio.run(run_node(_options(tmp_path, ("udp:nosuch9",))))
    assert not (tmp_path / CONTROL_SOCKET_FILE).exists()


def test_radio_seeds_differ_per_node_and_radio() -> None:
    seeds = {radio_seed(bytes([n]) * 32, spec) for n in range(3) for spec in ("udp:to0",
                                                                              "udp:to1")}
    assert len(seeds) == 6
    assert radio_seed(b"\x01" * 32, "udp:to0") == radio_seed(b"\x01" * 32, "udp:to0")
