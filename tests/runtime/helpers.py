"""Shared pieces of the runtime tests: real MeshNodes on in-process mem media."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from meshcomm.config import NodeConfig, config_with_overrides
from meshcomm.journal.store import JournalStore
from meshcomm.node.mesh import MeshNode, NodeSettings
from meshcomm.overlay.config import OverlayConfig
from meshcomm.runtime.app import NodeOptions
from meshcomm.runtime.control import CONTROL_SOCKET_FILE, control_request
from meshcomm.runtime.driver import NodeDriver
from meshcomm.security.identity import Identity
from meshcomm.security.verify import SignatureVerifier
from radios import Radio, open_radio
from radios.mem import MemMedium, drop_medium, get_medium

#: Upper bound for a condition in these tests; they normally finish in well under a second.
WAIT_S = 10.0
POLL_S = 0.01
FAST_OVERLAY = OverlayConfig(hello_interval_s=0.2, neighbour_timeout_s=1.0,
                             anti_entropy_interval_s=0.4)
#: Config overrides of the run_node tests: the fast overlay timers, SIP on any free ports.
FAST_NODE: dict[str, object] = {
    "overlay.hello_interval_s": 0.2, "overlay.neighbour_timeout_s": 1.0,
    "overlay.anti_entropy_interval_s": 0.4, "sip.udp_port": 0, "sip.tcp_port": 0}
#: Reply timeout of the tests' control requests (seconds).
CTL_TIMEOUT_S = 15.0


def node_options(data_dir: Path, spec: str, name: str, **overrides: object) -> NodeOptions:
    """run_node options of a quick test node ``name`` on radio ``spec``: FAST_NODE plus
    ``overrides`` (config key paths), short grace and announce delay, a fixed seed."""
    cfg = config_with_overrides(NodeConfig(), {**FAST_NODE, "node.name": name, **overrides})
    return NodeOptions(config=cfg, data_dir=data_dir, radio_specs=(spec,), hostname="t",
                       shutdown_grace_s=0.1, seed=3, register_delay_s=0.1)


def ctl(data_dir: Path, command: str, **args: object) -> object:
    """One control request to the node running with ``data_dir`` (blocking)."""
    return control_request(data_dir / CONTROL_SOCKET_FILE, command, timeout_s=CTL_TIMEOUT_S,
                           **args)


def identity(name: str) -> Identity:
    return Identity(hashlib.sha256(f"meshcomm-runtime-test:{name}".encode()).digest())


@contextmanager
def chain_medium(stations: list[str]) -> Iterator[MemMedium]:
    """A fresh medium where each station hears only its neighbours in ``stations``."""
    name = f"rt-{uuid.uuid4().hex[:12]}"
    medium = get_medium(name, full_mesh=False)
    medium.connect_chain(stations)
    try:
        yield medium
    finally:
        drop_medium(name)


async def make_driver(name: str, specs: list[str], journal_dir: Path | None = None, *,
                      seed: int = 1) -> NodeDriver:
    loop = asyncio.get_running_loop()
    ident = identity(name)
    radios: list[Radio] = [open_radio(spec) for spec in specs]
    for radio in radios:
        await radio.open()
    journal = None
    if journal_dir is not None:
        journal = JournalStore.open(journal_dir / f"{name}.sqlite", ident.node_id)
    node = MeshNode(ident, NodeSettings(overlay=FAST_OVERLAY), verifier=SignatureVerifier(),
                    rng=random.Random(seed), now=loop.time(), seq_base=1 << 32,
                    wall_offset_s=1.7e9)
    driver = NodeDriver(node, radios, journal, loop, wall_offset_s=1.7e9)
    driver.start()
    return driver


async def wait_until(condition: Callable[[], bool], what: str,
                     timeout_s: float = WAIT_S) -> float:
    """Poll ``condition`` on the running loop; return the time it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        if loop.time() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(POLL_S)
    return loop.time() - start


def aors(driver: NodeDriver) -> set[str]:
    return {entry.aor for entry in driver.who()}
