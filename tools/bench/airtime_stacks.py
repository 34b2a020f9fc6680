"""The two stacks of ``tools/bench/airtime.py`` on one namespace chain each, and the meters.

:class:`MeshStack` runs real ``meshcomm handset`` processes (default settings, the UDP
radio on every interface, as the integration tests start them), sends MESSAGEs through node
0's control socket (what ``meshcomm ctl send`` does) and reads node N-1's inbox
incrementally. :class:`RnsStack` runs ``airtime_rns_node.py`` with the Python of the
benchmark's own venv (``rns`` and ``lxmf`` from PyPI, :func:`ensure_rns_venv`). Both
record ``sent[text] = time.time()`` just before handing a message to node 0, and
``received[text] = [node's time.time() at receipt, ...]`` at the far node: one clock.

:func:`install_counters` / :func:`read_counters`: an nftables ``inet`` table per namespace
counting the UDP packets and bytes every node sends on each of its links (output hook, so
a frame is counted once, when sent, also if the receiver's loss rule drops it). Counted
bytes start at the IPv6 header; UDP payload = bytes - 48 * packets.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from meshcomm.runtime.control import ControlError, control_request
from tools.testbed import Testbed
from tools.testbed.procstat import cpu_seconds

RNS_PINS: Final = ("rns==1.5.7", "lxmf==1.2.1")
RNS_NODE_SCRIPT: Final = Path(__file__).with_name("airtime_rns_node.py")
COUNTER_TABLE: Final = "mcbench_airtime"
V6_UDP_HEADER_BYTES: Final = 48
DOMAIN: Final = "incident.local"
INBOX_POLL_S: Final = 0.1
REACHABLE_POLL_S: Final = 0.02
PIP_TIMEOUT_S: Final = 600.0
STOP_GRACE_S: Final = 5.0


class BenchError(RuntimeError):
    """The benchmark cannot run (not root, PyPI unreachable, a stack did not start)."""


# -- Reticulum's venv ---------------------------------------------------------------------------


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshcomm-bench"


def ensure_rns_venv(cache_dir: Path) -> Path:
    """The Python of ``cache_dir/rns-venv`` with :data:`RNS_PINS` installed (created and
    installed with pip from PyPI when missing or pinned differently)."""
    venv = cache_dir / "rns-venv"
    python, marker = venv / "bin" / "python", venv / "meshcomm-bench-pins.txt"
    pins = "\n".join(RNS_PINS) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == pins:
        return python
    cache_dir.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    done = subprocess.run([base, "-m", "venv", "--clear", str(venv)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"cannot create {venv}: {done.stderr.strip()[-500:]}")
    try:
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                               "--disable-pip-version-check", *RNS_PINS],
                              capture_output=True, text=True, check=False,
                              timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"pip install {' '.join(RNS_PINS)} took over {PIP_TIMEOUT_S:.0f} s: "
                         "is PyPI reachable?") from None
    if done.returncode != 0:
        raise BenchError(f"pip install {' '.join(RNS_PINS)} into {venv} failed (is PyPI "
                         f"reachable?): {done.stderr.strip()[-800:]}")
    marker.write_text(pins)
    return python


# -- byte counters ------------------------------------------------------------------------------


def install_counters(tb: Testbed) -> None:
    for node in range(tb.n_nodes):
        rules = "".join(f'    oifname "{name}" meta l4proto udp counter\n'
                        for name in tb.interfaces(node))
        script = (f"add table inet {COUNTER_TABLE}\ndelete table inet {COUNTER_TABLE}\n"
                  f"table inet {COUNTER_TABLE} {{\n  chain out {{\n"
                  f"    type filter hook output priority 0; policy accept;\n{rules}  }}\n}}\n")
        tb.run(node, ["nft", "-f", "-"], input_text=script)


@dataclass(frozen=True, slots=True)
class Count:
    packets: int = 0
    bytes: int = 0

    def __add__(self, other: Count) -> Count:
        return Count(self.packets + other.packets, self.bytes + other.bytes)

    def __sub__(self, other: Count) -> Count:
        return Count(self.packets - other.packets, self.bytes - other.bytes)

    @property
    def payload(self) -> int:
        return self.bytes - V6_UDP_HEADER_BYTES * self.packets


def read_counters(tb: Testbed) -> list[Count]:
    """UDP sent by each node on all its links so far."""
    counts = []
    for node in range(tb.n_nodes):
        listing = json.loads(tb.run(node, ["nft", "-j", "list", "table", "inet",
                                           COUNTER_TABLE]))
        total = Count()
        for item in listing.get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += Count(int(expr["counter"]["packets"]),
                                   int(expr["counter"]["bytes"]))
        counts.append(total)
    return counts


# -- the stacks ---------------------------------------------------------------------------------


@dataclass
class Stack:
    """What both stacks share: the bed, the message log, the node processes' PIDs."""

    name: str
    tb: Testbed
    sent: dict[str, float] = field(default_factory=dict)
    received: dict[str, list[float]] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def far(self) -> int:
        return self.tb.n_nodes - 1

    def record(self, text: str, at: float) -> None:
        with self.lock:
            self.received.setdefault(text, []).append(at)

    def copies(self, text: str) -> int:
        with self.lock:
            return len(self.received.get(text, ()))

    def cpu(self) -> list[float]:
        return [cpu_seconds(pid) or 0.0 for pid in self.pids]

    def start(self, rep: int) -> float:
        """Start every node at once (fresh state); the time.monotonic() of the start."""
        raise NotImplementedError

    def reachable(self) -> bool:
        """Node 0 knows a route to the far node."""
        raise NotImplementedError

    def ready_to_measure(self) -> None:
        """Start watching the far node's receipts."""
        raise NotImplementedError

    def send(self, text: str) -> None:
        """Hand one message to node 0 (``sent[text]`` = time.time() just before)."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class MeshStack(Stack):
    """Real meshcomm handsets ``n0..n<N-1>`` with default settings."""

    def __init__(self, tb: Testbed) -> None:
        super().__init__("meshcomm", tb)
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._since = 0

    def start(self, rep: int) -> float:
        """Start every node at once; the time.monotonic() of the start."""
        self._stop.clear()
        self._since = 0
        t0 = time.monotonic()
        nodes = [self.tb.start_node(i, name=f"n{i}", data_dir=self.tb.workdir / f"r{rep}n{i}",
                                    wait=False) for i in range(self.tb.n_nodes)]
        self.pids = [n.proc.pid for n in nodes if n.proc is not None]
        return t0

    def reachable(self) -> bool:
        far = f"sip:n{self.far}@{DOMAIN}"
        for entry in self.tb.node(0).who() or ():
            if entry.get("aor") == far and entry.get("hops") == self.far:
                return True
        return False

    def ready_to_measure(self) -> None:
        self._reader = threading.Thread(target=self._read_inbox, daemon=True)
        self._reader.start()

    def _read_inbox(self) -> None:
        node = self.tb.node(self.far)
        while not self._stop.wait(INBOX_POLL_S):
            try:
                rows = node.request("inbox", since=self._since)
            except ControlError:
                continue
            for row in rows:
                self._since = max(self._since, int(row["seq"]))
                self.record(str(row["text"]), float(row["received_at"]))

    def send(self, text: str) -> None:
        node = self.tb.node(0)
        self.sent[text] = time.time()
        try:
            control_request(node.sock, "send", to=f"sip:n{self.far}@{DOMAIN}", text=text,
                            wait_s=0.0)
        except ControlError as exc:
            print(f"meshcomm send failed: {exc}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join()
        for i in range(self.tb.n_nodes):
            self.tb.stop_node(i)


class RnsStack(Stack):
    """``airtime_rns_node.py`` in every namespace: transport on the middle nodes."""

    def __init__(self, tb: Testbed, python: Path, method: str, announce_s: float) -> None:
        super().__init__("reticulum", tb)
        self.python, self.method, self.announce_s = python, method, announce_s
        self.procs: list[subprocess.Popen[bytes]] = []
        self.reachable_at: float | None = None
        self._readers: list[threading.Thread] = []

    def _keygen(self, keys: Path) -> str:
        """Fresh identities for every node; the far node's LXMF delivery hash."""
        done = subprocess.run([str(self.python), str(RNS_NODE_SCRIPT), "keygen", str(keys),
                               str(self.tb.n_nodes)], capture_output=True, text=True,
                              check=False, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"Reticulum keygen failed: {done.stderr.strip()[-500:]}")
        hashes = json.loads(done.stdout.strip().splitlines()[-1])["hashes"]
        return str(hashes[self.far])

    def _argv(self, node: int, work: Path, target: str) -> list[str]:
        argv = [str(self.python), str(RNS_NODE_SCRIPT), "run", "--config",
                str(work / f"rns{node}"), "--identity", str(work / "keys" / f"id{node}"),
                "--name", f"n{node}", "--method", self.method,
                "--announce-s", str(self.announce_s)]
        if 0 < node < self.far:
            argv.append("--transport")
        if node == 0:
            argv += ["--target", target]
        return argv

    def start(self, rep: int) -> float:
        work = self.tb.workdir / f"r{rep}"
        target = self._keygen(work / "keys")
        self.reachable_at = None
        t0 = time.monotonic()
        wall0 = time.time()
        self.procs = []
        for node in range(self.tb.n_nodes):
            with (work / f"rns{node}.log").open("ab") as log:
                proc = self.tb.popen(node, self._argv(node, work, target),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log)
            self.procs.append(proc)
        self.pids = [p.pid for p in self.procs]
        self._readers = [threading.Thread(target=self._read_events,
                                          args=(node, proc.stdout, wall0 - t0), daemon=True)
                         for node, proc in enumerate(self.procs)]
        for reader in self._readers:
            reader.start()
        return t0

    def _read_events(self, node: int, out: IO[bytes] | None, offset: float) -> None:
        assert out is not None
        for line in out:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("ev") == "recv" and node == self.far:
                self.record(str(event["text"]), float(event["t"]))
            elif event.get("ev") == "reachable" and node == 0:
                self.reachable_at = float(event["t"]) - offset
            elif event.get("ev") == "error":
                print(f"reticulum node {node}: {event.get('what')}", file=sys.stderr)

    def reachable(self) -> bool:
        return self.reachable_at is not None

    def ready_to_measure(self) -> None:
        """Nothing to start: the far node's receipts come with its events."""

    def send(self, text: str) -> None:
        stdin = self.procs[0].stdin
        assert stdin is not None
        self.sent[text] = time.time()
        stdin.write((json.dumps({"send": text}) + "\n").encode())
        stdin.flush()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for reader in self._readers:
            reader.join(timeout=STOP_GRACE_S)
