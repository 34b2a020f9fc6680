"""Full and read-only disks at start, mid-run and at stop, on a real tmpfs (root): one-line
errors, no traceback, no bricked identity, every store closed, the journal verifiable."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from meshcomm.cli.ctl_cmd import format_journal, format_status
from meshcomm.cli.main import main
from meshcomm.journal.store import JournalStore
from meshcomm.journal.verify import verify_journal
from meshcomm.runtime import app
from meshcomm.runtime.app import (
    EXIT_CLOSE_FAILED,
    JOURNAL_FILE,
    STORE_FORWARD_FILE,
    StartupError,
    close_all,
    data_dir_locked,
    run_node,
)
from meshcomm.runtime.control import CONTROL_SOCKET_FILE
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.security.keystore import EPOCH_FILE, IDENTITY_FILE, read_key_file
from tests.runtime.disk import Ext4Disk, SmallDisk
from tests.runtime.helpers import aors, chain_medium, ctl, node_options, wait_until

PAGE = 4096
#: Free space left when starting a node (pages): from none to enough for a node.
FREE_PAGES = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 64)
REPO = Path(__file__).resolve().parents[2]

Ready = Callable[[NodeDriver, NodeInfo], None]


def stop_when_ready(seen: list[NodeInfo]) -> Ready:
    def ready(driver: NodeDriver, info: NodeInfo) -> None:
        seen.append(info)
        driver.loop.call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
    return ready


def open_paths_under(path: Path) -> list[str]:
    """Files this process still has open below ``path``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage() for r in caplog.records
           if r.exc_info is not None or "Traceback" in r.getMessage()]
    assert bad == []


def leave_free(disk: SmallDisk, pages: int) -> None:
    """Fill the disk so that exactly ``pages`` pages stay free."""
    reserve = disk.path / "reserve"
    if pages:
        reserve.write_bytes(b"r" * pages * PAGE)
    disk.fill()
    if pages:
        reserve.unlink()


def test_start_with_no_or_little_space_fails_cleanly_and_never_bricks(
        small_disk: SmallDisk, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    data_dir = small_disk.path / "node"
    outcomes: list[tuple[int, str]] = []
    keys: set[bytes] = set()
    with chain_medium(["a"]) as medium:
        options = node_options(data_dir, f"mem:{medium.name}/a", "n")
        for pages in FREE_PAGES:
            leave_free(small_disk, pages)
            seen: list[NodeInfo] = []
            try:
                code = asyncio.run(run_node(options, stop_when_ready(seen)))
                assert code in (0, EXIT_CLOSE_FAILED)
                outcomes.append((pages, f"ran, exit {code}"))
            except StartupError as exc:
                message = str(exc)
                assert "\n" not in message and str(data_dir) in message
                assert "no space left on device" in message
                outcomes.append((pages, message))
            assert open_paths_under(small_disk.path) == []
            assert not data_dir_locked(data_dir)
            small_disk.free()
            # with room again the node starts, with the identity it had
            assert asyncio.run(run_node(options, stop_when_ready(seen))) == 0
            keys.add(seen[-1].public_key)
            assert read_key_file(data_dir / IDENTITY_FILE).public_key == seen[-1].public_key
    no_tracebacks(caplog)
    assert len(keys) == 1
    assert outcomes[0] == (0, f"no space left on device writing {data_dir}/{IDENTITY_FILE}")
    refused = {message.split(" writing ")[-1] for _, message in outcomes
               if message.startswith("no space") or "space" in message}
    assert len(refused) >= 2, outcomes     # more than one start-up step was caught
    assert outcomes[-1][1].startswith("ran"), outcomes
    small_disk.fill()            # with an identity, the first write is the boot epoch
    with pytest.raises(StartupError, match=f"^no space left on device writing "
                                           f"{data_dir}/{EPOCH_FILE}$"):
        asyncio.run(run_node(options))
    small_disk.free()
    assert sorted(p.name for p in data_dir.glob(".*")) == []      # no temporary files
    report = verify_journal(data_dir / JOURNAL_FILE, keys.pop())
    assert report.ok, report.problems


def test_no_free_inode_at_any_start_up_step_is_one_line(
        small_disk: SmallDisk, caplog: pytest.LogCaptureFixture) -> None:
    """A file system out of inodes refuses each new file in turn: the data dir, lock,
    identity, journal and store-and-forward files, and the control socket (the boot
    epoch needs no more inodes than the identity before it; the space sweep covers it)."""
    caplog.set_level(logging.INFO)
    data_dir = small_disk.path / "node"
    named: list[str] = []
    with chain_medium(["a"]) as medium:
        options = node_options(data_dir, f"mem:{medium.name}/a", "n")
        for inodes in range(1, 20):
            small_disk.reformat(nr_inodes=inodes)
            seen: list[NodeInfo] = []
            try:
                asyncio.run(run_node(options, stop_when_ready(seen)))
            except StartupError as exc:
                message = str(exc)
                assert "\n" not in message and str(data_dir) in message, message
                assert "no space left on device" in message, message
                named.append(message.rsplit("/", 1)[-1])
                continue
            finally:
                assert open_paths_under(small_disk.path) == []
            break
    no_tracebacks(caplog)
    assert seen, f"never started: {named}"
    assert named[0] == "node: no space left on device"      # cannot create data dir
    assert {"node.lock", IDENTITY_FILE, JOURNAL_FILE, STORE_FORWARD_FILE,
            CONTROL_SOCKET_FILE} <= set(named), named


def test_read_only_data_dir_at_start_is_one_line(small_disk: SmallDisk,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    data_dir = small_disk.path / "node"
    seen: list[NodeInfo] = []
    with chain_medium(["a"]) as medium:
        options = node_options(data_dir, f"mem:{medium.name}/a", "n")
        assert asyncio.run(run_node(options, stop_when_ready(seen))) == 0
        small_disk.read_only()
        try:
            with pytest.raises(StartupError) as refused:
                asyncio.run(run_node(options))
            fresh = node_options(small_disk.path / "fresh", f"mem:{medium.name}/a", "n")
            with pytest.raises(StartupError) as no_dir:
                asyncio.run(run_node(fresh))
        finally:
            small_disk.read_write()
        assert asyncio.run(run_node(options, stop_when_ready(seen))) == 0
    assert str(refused.value) == (f"data dir {data_dir} is read-only: cannot create "
                                  f"{data_dir}/node.lock")
    assert str(no_dir.value) == (f"cannot create data dir {small_disk.path / 'fresh'}: "
                                 "read-only file system")
    assert seen[0].public_key == seen[1].public_key
    assert (seen[0].boot_epoch, seen[1].boot_epoch) == (1, 2)
    no_tracebacks(caplog)


def test_handset_command_prints_one_line_and_exits_1(
        small_disk: SmallDisk, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = small_disk.path / "node"
    small_disk.fill()
    assert main(["handset", "--radio", "udp:lo", "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"meshcomm handset: no space left on device writing " \
                      f"{data_dir}/{IDENTITY_FILE}"
    assert not (data_dir / IDENTITY_FILE).exists()
    small_disk.free()
    small_disk.read_only()
    try:
        done = subprocess.run([sys.executable, "-m", "meshcomm.cli.main", "relay", "--radio",
                               "udp:lo", "--data-dir", str(data_dir)], cwd=REPO,
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        small_disk.read_write()
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"meshcomm relay: data dir {data_dir} is read-only: cannot create "
        f"{data_dir}/node.lock")


def test_full_disk_mid_run_keeps_serving_and_reports_it(
        small_disk: SmallDisk, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    dirs = {"a": small_disk.path / "a", "b": tmp_path / "b"}
    drivers: dict[str, NodeDriver] = {}
    infos: dict[str, NodeInfo] = {}
    extra = [f"sip:extra{i}@incident.local" for i in range(20)]

    def ready(key: str) -> Ready:
        def cb(driver: NodeDriver, info: NodeInfo) -> None:
            drivers[key], infos[key] = driver, info
        return cb

    async def journal_status() -> dict[str, object]:
        status = await asyncio.to_thread(ctl, dirs["a"], "status")
        assert isinstance(status, dict)
        journal = status["journal"]
        assert isinstance(journal, dict)
        return journal

    async def scenario() -> tuple[int, int, dict[str, object], str]:
        with chain_medium(["a", "b"]) as medium:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(run_node(node_options(
                    dirs[k], f"mem:{medium.name}/{k}", f"n{k}"), ready(k))) for k in "ab"]
                await wait_until(lambda: len(infos) == 2, "both nodes up")
                both = {infos["a"].aor, infos["b"].aor}
                await wait_until(lambda: both <= aors(drivers["a"]), "a sees b")
                small_disk.fill()
                for aor in extra:                  # b's new bindings: journal events on a
                    drivers["b"].register(aor, ("sip:x@b.mesh",))
                    await asyncio.sleep(0.05)
                await wait_until(lambda: set(extra) <= aors(drivers["a"]), "a still learns")
                await wait_until(lambda: drivers["a"].journal is not None
                                 and not drivers["a"].journal.writable, "journal failing")
                failing = await journal_status()
                text = format_status(await asyncio.to_thread(ctl, dirs["a"], "status"))
                # a checkpoint signed while the disk is full is not gossiped to witnesses
                beacon = drivers["a"].node.overlay.beacon
                announced = beacon.latest
                app._checkpoint(drivers["a"])
                assert beacon.latest == announced
                await asyncio.sleep(2.5)          # several retries while still full
                small_disk.free()          # no new event needed: the node retries
                await wait_until(lambda: drivers["a"].journal is not None
                                 and drivers["a"].journal.writable, "journal written again")
                app._checkpoint(drivers["a"])
                assert beacon.latest is not None and beacon.latest != announced
                for key in "ab":
                    await asyncio.to_thread(ctl, dirs[key], "stop")
                return await tasks[0], await tasks[1], failing, text

    code_a, code_b, failing, text = asyncio.run(scenario())
    assert (code_a, code_b) == (0, 0)
    assert failing["writable"] is False and failing["dropped"] == 0
    assert failing["last_error"] == ("no space left on device writing "
                                     f"{dirs['a'] / JOURNAL_FILE}")
    assert isinstance(failing["pending"], int) and failing["pending"] > 0
    assert "NOT WRITABLE" in text
    journal_errors = [r for r in caplog.records
                      if r.name == "meshcomm.journal.store" and r.levelno >= logging.ERROR]
    assert len(journal_errors) == 1, [r.getMessage() for r in journal_errors]
    no_tracebacks(caplog)
    report = verify_journal(dirs["a"] / JOURNAL_FILE, infos["a"].public_key)
    assert report.ok and report.checkpoints >= 1
    with JournalStore.open(dirs["a"] / JOURNAL_FILE, infos["a"].node_id) as store:
        learned = {e.data.get("aor") for e in store.entries() if e.type == "binding.learned"}
    assert set(extra) <= learned          # nothing journaled while full was lost


def test_stop_on_a_full_disk_closes_every_store_without_a_traceback(
        small_disk: SmallDisk, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    data_dir = small_disk.path / "node"
    drivers: list[NodeDriver] = []
    seen: list[NodeInfo] = []

    def ready(driver: NodeDriver, info: NodeInfo) -> None:
        drivers.append(driver)
        seen.append(info)

    async def scenario(medium: str) -> int:
        task = asyncio.create_task(run_node(node_options(data_dir, f"mem:{medium}/a", "n"),
                                            ready))
        await wait_until(lambda: bool(drivers), "node up")
        small_disk.fill()
        for i in range(10):
            drivers[0].register(f"sip:more{i}@incident.local", ("sip:x@a.mesh",))
        await asyncio.to_thread(ctl, data_dir, "stop")
        return await task

    with chain_medium(["a"]) as medium:
        code = asyncio.run(scenario(medium.name))
        assert code == EXIT_CLOSE_FAILED
        assert open_paths_under(small_disk.path) == []
        assert not data_dir_locked(data_dir)
        assert not (data_dir / CONTROL_SOCKET_FILE).exists()
        assert not any(radio.is_open for radio in drivers[0].radios.values())
        assert drivers[0].sip_sockets is not None and \
            drivers[0].sip_sockets.tcp_connections == 0
        summary = [r.getMessage() for r in caplog.records
                   if "could not close cleanly" in r.getMessage()]
        assert len(summary) == 1 and "entries not written" in summary[0]
        no_tracebacks(caplog)
        small_disk.free()
        assert asyncio.run(run_node(node_options(data_dir, f"mem:{medium.name}/a", "n"),
                                    stop_when_ready(seen))) == 0
    assert seen[0].public_key == seen[1].public_key
    report = verify_journal(data_dir / JOURNAL_FILE, seen[0].public_key)
    assert report.ok and report.checkpoints >= 1


def test_close_all_closes_the_rest_when_one_close_fails(
        caplog: pytest.LogCaptureFixture) -> None:
    closed: list[str] = []

    def broken() -> None:
        raise OSError(28, "No space left on device")

    def buggy() -> None:
        raise RuntimeError("bug in a close")

    failed = close_all([("first", lambda: closed.append("first")), ("disk", broken),
                        ("bug", buggy), ("last", lambda: closed.append("last"))])
    assert closed == ["first", "last"] and failed == ["disk", "bug"]
    assert [r.getMessage() for r in caplog.records] == [
        "disk: close failed: no space left on device closing disk",
        "bug: close failed: RuntimeError: bug in a close"]
    no_tracebacks(caplog)


def test_status_journal_line() -> None:
    healthy = {"path": "/d/journal.sqlite", "durable_seq": 12, "writable": True,
               "dropped": 0}
    assert format_journal(healthy) == "journal  /d/journal.sqlite durable seq 12"
    assert format_journal({**healthy, "dropped": 3}).endswith(
        "(3 event(s) dropped earlier)")
    failing = {**healthy, "writable": False, "pending": 40, "max_pending": 4096,
               "dropped": 0, "last_error": "no space left on device writing /d/journal.sqlite"}
    assert format_journal(failing) == (
        "journal  /d/journal.sqlite durable seq 12; NOT WRITABLE: no space left on device "
        "writing /d/journal.sqlite; 40/4096 entries waiting, 0 dropped")


def test_disk_turning_read_only_mid_run_and_at_stop(
        ext4_disk: Ext4Disk, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The kernel turns the data dir's file system read-only under a running node (an
    ext4 error, as on a failing SD card): the node keeps serving and says so; it stops
    without a traceback, closing everything; after fsck it starts again as itself."""
    caplog.set_level(logging.INFO)
    dirs = {"a": ext4_disk.path / "a", "b": tmp_path / "b"}
    drivers: dict[str, NodeDriver] = {}
    infos: dict[str, NodeInfo] = {}
    extra = [f"sip:ro{i}@incident.local" for i in range(10)]

    def ready(key: str) -> Ready:
        def cb(driver: NodeDriver, info: NodeInfo) -> None:
            drivers[key], infos[key] = driver, info
        return cb

    async def scenario(medium: str) -> tuple[int, dict[str, object]]:
        async with asyncio.TaskGroup() as tg:
            tasks = {k: tg.create_task(run_node(node_options(
                dirs[k], f"mem:{medium}/{k}", f"n{k}"), ready(k))) for k in "ab"}
            await wait_until(lambda: len(infos) == 2, "both nodes up")
            await wait_until(lambda: infos["b"].aor in aors(drivers["a"]), "a sees b")
            ext4_disk.fail()
            for aor in extra:
                drivers["b"].register(aor, ("sip:x@b.mesh",))
                await asyncio.sleep(0.05)
            await wait_until(lambda: set(extra) <= aors(drivers["a"]), "a still learns")
            await wait_until(lambda: drivers["a"].journal is not None
                             and not drivers["a"].journal.writable, "journal failing")
            status = await asyncio.to_thread(ctl, dirs["a"], "status")
            assert isinstance(status, dict)
            for key in "ab":
                await asyncio.to_thread(ctl, dirs[key], "stop")
            assert await tasks["b"] == 0
            return await tasks["a"], status["journal"]

    with chain_medium(["a", "b"]) as medium:
        code, journal = asyncio.run(scenario(medium.name))
        assert code == EXIT_CLOSE_FAILED
        assert journal["writable"] is False
        assert journal["last_error"] == ("read-only file system: cannot write "
                                         f"{dirs['a'] / JOURNAL_FILE}")
        assert open_paths_under(ext4_disk.path) == []
        assert not any(radio.is_open for radio in drivers["a"].radios.values())
        no_tracebacks(caplog)
        journal_errors = [r for r in caplog.records if r.name == "meshcomm.journal.store"
                          and r.levelno >= logging.ERROR and "at close" not in r.getMessage()]
        assert len(journal_errors) == 1, [r.getMessage() for r in journal_errors]
        with pytest.raises(StartupError) as refused:      # still read-only: one line
            asyncio.run(run_node(node_options(dirs["a"], f"mem:{medium.name}/a", "na")))
        assert str(refused.value) == (f"data dir {dirs['a']} is read-only: cannot create "
                                      f"{dirs['a']}/node.lock")
        ext4_disk.repair()
        seen: list[NodeInfo] = []
        assert asyncio.run(run_node(node_options(dirs["a"], f"mem:{medium.name}/a", "na"),
                                    stop_when_ready(seen))) == 0
    assert seen[0].public_key == infos["a"].public_key
    assert seen[0].boot_epoch == infos["a"].boot_epoch + 1
    report = verify_journal(dirs["a"] / JOURNAL_FILE, infos["a"].public_key)
    assert report.ok and report.checkpoints >= 1
