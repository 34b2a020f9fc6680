"""Helpers for the real-process tests: `meshcomm handset` children in test-bed namespaces."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from meshcomm.runtime.control import CONTROL_SOCKET_FILE, ControlError, control_request
from tools.testbed import Testbed

REPO = Path(__file__).resolve().parents[2]
#: Poll period of the control sockets while waiting.
POLL_S = 0.1
#: Timeout of one control request.
REQUEST_TIMEOUT_S = 2.0


@dataclass
class Node:
    index: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def sock(self) -> Path:
        return self.data_dir / CONTROL_SOCKET_FILE

    def request(self, command: str) -> object:
        return control_request(self.sock, command, timeout_s=REQUEST_TIMEOUT_S)

    def who_aors(self) -> set[str] | None:
        """AoRs the node lists, or None while it does not answer."""
        try:
            entries = self.request("who")
        except ControlError:
            return None
        assert isinstance(entries, list)
        return {str(e["aor"]) for e in entries}

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def handset_argv(node: Node, radios: list[str], *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "meshcomm.cli.main", "handset",
            "--data-dir", str(node.data_dir), "--impair", "loss=0.1"]
    for spec in radios:
        argv += ["--radio", spec]
    return [*argv, *extra]


def start(tb: Testbed, node: Node, argv: list[str]) -> None:
    with node.log_path.open("ab") as log:
        node.proc = tb.popen(node.index, argv, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)


def start_quick_handsets(tb: Testbed, nodes: list[Node]) -> None:
    """Start ``unit<i>`` handsets on each node's first interface with fast beacons (short
    tests): HELLO every 0.3 s, neighbour timeout 1.5 s, 0.2 s shutdown grace."""
    for node in nodes:
        argv = [sys.executable, "-m", "meshcomm.cli.main", "handset",
                "--data-dir", str(node.data_dir), "--name", f"unit{node.index}",
                "--radio", f"udp:{tb.interfaces(node.index)[0]}",
                "--set", "overlay.hello_interval_s=0.3",
                "--set", "overlay.neighbour_timeout_s=1.5",
                "--shutdown-grace", "0.2"]
        start(tb, node, argv)


def make_nodes(tb: Testbed, base: Path) -> list[Node]:
    return [Node(i, base / f"n{i}", base / f"n{i}.log") for i in range(tb.n_nodes)]


def wait_for(condition: Callable[[], bool], timeout_s: float) -> float | None:
    """Poll ``condition``; return the seconds it took, or None on timeout."""
    start_s = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start_s
        if time.monotonic() - start_s > timeout_s:
            return None
        time.sleep(POLL_S)


def diagnostics(nodes: list[Node]) -> str:
    parts = []
    for node in nodes:
        code = node.proc.poll() if node.proc else None
        parts.append(f"--- node {node.index} (exit {code}) who={node.who_aors()}\n"
                     f"{node.log_tail()}")
    return "\n".join(parts)


def stop_all(nodes: list[Node]) -> None:
    """Kill every child still running (the test bed also does this at teardown)."""
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()
