"""The namespace test bed library (tools/testbed): topologies, reachability, loss, teardown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from radios.udp import UdpRadio
from tests.envcheck import require_root
from tests.radios.conftest import Inbox
from tools.testbed import Testbed, chain, cleanup, grid, in_netns, list_namespaces, star
from tools.testbed.netns import NAME_ROOT, run_ip

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _root() -> None:
    require_root()


def _ours(prefix: str) -> list[str]:
    return [name for name in list_namespaces() if name.startswith(prefix + "-")]


def _links(bed: Testbed, node: int) -> list[str]:
    out = bed.run(node, ["ip", "-o", "link", "show"])
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


async def _open(bed: Testbed, node: int, iface: str) -> tuple[UdpRadio, Inbox]:
    radio = UdpRadio(f"udp:{iface}", iface)
    with in_netns(bed.ns(node)):
        await radio.open()
    box = Inbox()
    radio.set_receiver(box)
    return radio, box


def test_chain_builds_and_each_node_hears_only_its_neighbours() -> None:
    async def scenario(bed: Testbed) -> None:
        a, box_a = await _open(bed, 0, "to1")
        b0, box_b0 = await _open(bed, 1, "to0")
        b2, box_b2 = await _open(bed, 1, "to2")
        c, box_c = await _open(bed, 2, "to1")
        try:
            a.send(b"from 0", None)
            c.send(b"from 2", None)
            assert (await box_b0.wait_for(1))[0][0] == b"from 0"
            assert (await box_b2.wait_for(1))[0][0] == b"from 2"
            b0.send(b"barrier to 0", None)
            b2.send(b"barrier to 2", None)
            await box_a.wait_for(1)
            await box_c.wait_for(1)
            assert box_a.payloads == [b"barrier to 0"]
            assert box_c.payloads == [b"barrier to 2"]
            assert box_b0.payloads == [b"from 0"] and box_b2.payloads == [b"from 2"]
        finally:
            for radio in (a, b0, b2, c):
                radio.close()

    with chain(3) as bed:
        assert _ours(bed.prefix) == bed.namespaces
        assert [bed.interfaces(i) for i in range(3)] == [["to1"], ["to0", "to2"], ["to1"]]
        assert [bed.neighbours(i) for i in range(3)] == [[1], [0, 2], [1]]
        assert _links(bed, 0) == ["lo", "to1"] and _links(bed, 1) == ["lo", "to0", "to2"]
        assert bed.link_local(1, "to0").startswith("fe80:")
        asyncio.run(scenario(bed))


def test_nftables_loss_drops_on_the_chosen_interface() -> None:
    async def scenario(bed: Testbed) -> None:
        a, _ = await _open(bed, 0, "to1")
        b, box_b = await _open(bed, 1, "to0")
        try:
            bed.set_loss(1, "to0", 30)
            assert "numgen random mod 100 < 30 drop" in bed.run(1, ["nft", "list", "ruleset"])
            bed.set_loss(1, "to0", 100)
            assert "numgen" not in bed.run(1, ["nft", "list", "ruleset"])
            a.send(b"lost", None)
            bed.set_loss(1, "to0", 0)
            assert "mctb_loss" not in bed.run(1, ["nft", "list", "ruleset"])
            a.send(b"kept", None)
            await box_b.wait_for(1)
            assert box_b.payloads == [b"kept"]
        finally:
            a.close()
            b.close()

    with chain(2) as bed:
        asyncio.run(scenario(bed))


def test_star_and_grid_topologies() -> None:
    with star(4) as bed:
        assert bed.edges == [(0, 1), (0, 2), (0, 3)]
        assert bed.interfaces(0) == ["to1", "to2", "to3"] and bed.interfaces(3) == ["to0"]
    with grid(3, 2) as bed:
        # 0 1 2
        # 3 4 5
        assert sorted(bed.edges) == [(0, 1), (0, 3), (1, 2), (1, 4), (2, 5), (3, 4), (4, 5)]
        assert bed.neighbours(4) == [1, 3, 5]
        assert _links(bed, 4) == ["lo", "to1", "to3", "to5"]


def test_teardown_on_exception_removes_namespaces_and_processes() -> None:
    proc: subprocess.Popen[bytes] | None = None
    prefix = ""
    with pytest.raises(RuntimeError, match="boom"), chain(2) as bed:
        prefix = bed.prefix
        proc = bed.popen(1, ["sleep", "60"])
        bed.run(0, ["true"])
        raise RuntimeError("boom")
    assert proc is not None and proc.poll() is not None
    assert _ours(prefix) == []


def test_parallel_beds_get_distinct_names() -> None:
    beds: list[Testbed] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            beds.append(chain(2))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert len({bed.prefix for bed in beds}) == 2
        assert all(len(_ours(bed.prefix)) == 2 for bed in beds)
    finally:
        for bed in beds:
            bed.close()
    assert all(_ours(bed.prefix) == [] for bed in beds)


def test_cleanup_removes_leftovers_of_dead_runs_only() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{NAME_ROOT}{dead.pid}x0badc0-0"
    alive = f"{NAME_ROOT}{os.getpid()}x0badc0-0"
    run_ip("netns", "add", stale)
    run_ip("netns", "add", alive)
    try:
        removed = cleanup()
        assert stale in removed and alive not in removed
        assert alive in list_namespaces()
        assert cleanup(f"{NAME_ROOT}{os.getpid()}x0badc0") == [alive]
    finally:
        for name in (stale, alive):
            run_ip("netns", "del", name, check=False)


def test_cli_holds_a_bed_and_tears_it_down_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.testbed", "chain", "2", "--loss", "5"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "node 0: NAME  interfaces: to1"
        assert first.startswith("node 0: ")
        name = first.split()[2]
        proc.stdout.readline()
        assert proc.stdout.readline().startswith("try:")
        assert name in list_namespaces()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) != 0
        assert name not in list_namespaces()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    listed = subprocess.run([sys.executable, "-m", "tools.testbed", "list"], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    assert name not in listed.stdout
