"""Real ``meshcomm handset`` / ``meshcomm relay`` processes inside test-bed namespaces.

:class:`MeshProcess` is one node: its argv, a data dir of its own (a fresh temp dir unless
given, so the start is zero-config), its stderr log and the running process. The test bed
(:meth:`tools.testbed.Testbed.start_node`) starts it with the radios of its namespace and
waits until its control socket answers ``status``; the control socket is a unix socket file,
so the test process can query it from outside the namespace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from meshcomm.runtime.control import CONTROL_SOCKET_FILE, ControlError, control_request

logger = logging.getLogger(__name__)

REPO: Final = Path(__file__).resolve().parents[2]
#: Default SIP port of a node's gateway (each namespace has its own loopback).
DEFAULT_SIP_PORT: Final = 5060
LOOPBACK: Final = "127.0.0.1"
#: How long a starting node may take until its control socket answers.
NODE_READY_TIMEOUT_S: Final = 20.0
#: How long ``stop_node`` waits for the process to exit after the signal.
NODE_EXIT_TIMEOUT_S: Final = 10.0
#: Poll period while waiting for a condition.
POLL_S: Final = 0.05
#: Timeout of one control request.
REQUEST_TIMEOUT_S: Final = 3.0
LOG_TAIL_LINES: Final = 25
ROLES: Final = ("handset", "relay")


class NodeError(RuntimeError):
    """A node did not start, answer or stop as expected (message has its log tail)."""


@dataclass
class MeshProcess:
    """One meshcomm node of a test bed (see the module docstring)."""

    index: int
    role: str
    name: str | None
    data_dir: Path
    log_path: Path
    sip_port: int
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sock(self) -> Path:
        return self.data_dir / CONTROL_SOCKET_FILE

    @property
    def sip_addr(self) -> tuple[str, int]:
        """The gateway's SIP address inside the node's namespace."""
        return (LOOPBACK, self.sip_port)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def request(self, command: str, *, timeout_s: float = REQUEST_TIMEOUT_S,
                **args: Any) -> Any:
        """One control request (``who``, ``status``, ``send``, ``inbox``, ...)."""
        return control_request(self.sock, command, timeout_s=timeout_s, **args)

    def status(self) -> dict[str, Any]:
        result = self.request("status")
        if not isinstance(result, dict):
            raise NodeError(f"node {self.index}: status is not an object: {result!r}")
        return result

    def who(self) -> list[dict[str, Any]] | None:
        """The bindings the node lists, or None while it does not answer."""
        try:
            entries = self.request("who")
        except ControlError:
            return None
        return entries if isinstance(entries, list) else None

    def who_aors(self) -> set[str] | None:
        entries = self.who()
        return None if entries is None else {str(e.get("aor")) for e in entries}

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        code = None if self.proc is None else self.proc.poll()
        who = self.who_aors() if self.running() else None
        return (f"--- node {self.index} ({self.role}, exit {code}, data {self.data_dir}) "
                f"who={who}\n{self.log_tail()}")


def node_argv(role: str, data_dir: Path, radios: Sequence[str], *, name: str | None,
              sip_port: int, impair: str | None, extra_args: Sequence[str]) -> list[str]:
    """The command line of one node (``python -m meshcomm.cli.main ROLE ...``)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    argv = [sys.executable, "-m", "meshcomm.cli.main", role, "--data-dir", str(data_dir)]
    for spec in radios:
        argv += ["--radio", spec]
    if name is not None:
        argv += ["--name", name]
    if impair:
        argv += ["--impair", impair]
    if sip_port != DEFAULT_SIP_PORT:
        argv += ["--sip-listen", f"{LOOPBACK}:{sip_port}"]
    return [*argv, *extra_args]


def ctl_argv(node: MeshProcess, *action: str, timeout_s: float | None = None) -> list[str]:
    """The command line of ``meshcomm ctl ACTION`` against the node's data dir."""
    argv = [sys.executable, "-m", "meshcomm.cli.main", "ctl", "--data-dir", str(node.data_dir)]
    if timeout_s is not None:
        argv += ["--timeout", str(timeout_s)]
    return [*argv, *action]


def wait_until(condition: Callable[[], bool], timeout_s: float,
               poll_s: float = POLL_S) -> float | None:
    """Poll ``condition``; the seconds it took, or None on timeout."""
    start_s = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start_s
        if time.monotonic() - start_s > timeout_s:
            return None
        time.sleep(poll_s)


def _answers(node: MeshProcess) -> bool:
    if not node.running():
        raise NodeError(f"node {node.index} exited during start\n{node.describe()}")
    try:
        node.request("status", timeout_s=1.0)
    except ControlError:
        return False
    return True


def wait_ready(node: MeshProcess, timeout_s: float = NODE_READY_TIMEOUT_S) -> None:
    """Wait until the control socket answers; NodeError (with the log) if not."""
    if wait_until(lambda: _answers(node), timeout_s) is None:
        raise NodeError(f"node {node.index}: no control socket after {timeout_s} s\n"
                        f"{node.describe()}")


def launch(node: MeshProcess, popen: Callable[..., subprocess.Popen[bytes]]) -> None:
    """Start ``node.argv`` with ``popen`` (the bed's, so teardown stops it); log appended."""
    node.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with node.log_path.open("ab") as log:
        log.write(f"=== start {' '.join(node.argv)}\n".encode())
        log.flush()
        node.proc = popen(node.index, node.argv, stdout=subprocess.DEVNULL, stderr=log,
                          stdin=subprocess.DEVNULL, cwd=REPO)
    node.started_at = time.monotonic()


def stop(node: MeshProcess, sig: int = signal.SIGTERM,
         timeout_s: float = NODE_EXIT_TIMEOUT_S) -> int | None:
    """Send ``sig`` to the node's process group and wait; its exit status (None: not run).

    SIGKILL follows if it has not exited within ``timeout_s``.
    """
    proc = node.proc
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("node %d ignored signal %d; killing it", node.index, sig)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode
