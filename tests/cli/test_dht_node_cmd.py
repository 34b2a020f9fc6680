"""``meshcomm dht-node`` as a real subprocess: starts, logs its id and peers, joins another
node, keeps its id in --data-dir, stops cleanly on SIGINT/SIGTERM, and refuses bad
addresses and busy ports with one line and a non-zero status."""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from meshcomm.cli.dht_node_cmd import NODE_ID_FILE, parse_listen
from meshcomm.errors import ConfigError
from meshcomm.runtime.dht_opendht import DhtBind

DEADLINE_S = 20.0
STOP_DEADLINE_S = 60.0
STARTED_RE = re.compile(r"DHT node ([0-9a-f]{40}) listening on UDP (\S+) port (\d+)")


class Node:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first stderr line (already read or still to come) matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + DEADLINE_S
        seen = 0
        while True:
            for line in self.lines[seen:]:
                match = regex.search(line)
                if match:
                    return match
            seen = len(self.lines)
            left = deadline - time.monotonic()
            assert left > 0, f"no line matching {pattern!r} in {self.lines}"
            assert self.proc.stderr is not None
            ready, _, _ = select.select([self.proc.stderr], [], [], left)
            if ready:
                line = self.proc.stderr.readline()
                assert line, f"exited ({self.proc.wait()}) before {pattern!r}: {self.lines}"
                self.lines.append(line)

    def stop(self, signum: int) -> int:
        """Signal the node and wait for it to exit (a node whose peers died waits for
        OpenDHT's lookups in flight to give up on them, ~17 s, before it exits)."""
        self.proc.send_signal(signum)
        _, err = self.proc.communicate(timeout=STOP_DEADLINE_S)
        self.lines += err.splitlines()
        return self.proc.returncode


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "meshcomm.cli.main", "dht-node", *args]


@contextmanager
def dht_node(*args: str) -> Iterator[Node]:
    proc = subprocess.Popen(_command(*args), stderr=subprocess.PIPE, text=True,
                            stdout=subprocess.DEVNULL)
    node = Node(proc)
    try:
        yield node
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_starts_logs_id_and_stops_cleanly_on_sigterm_and_sigint() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        with dht_node("--listen", "127.0.0.1:0", "--peers-interval", "0.2") as node:
            started = node.wait_for(STARTED_RE.pattern)
            assert started.group(2) == "127.0.0.1" and int(started.group(3)) > 0
            node.wait_for(r"good DHT peers: 0")
            assert node.stop(signum) == 0
            assert any("stopping" in line for line in node.lines)
            assert not any("Traceback" in line for line in node.lines)


def test_two_nodes_join_and_the_id_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "dht"
    with dht_node("--listen", "127.0.0.1:0", "--data-dir", str(data),
                  "--peers-interval", "0.2") as first:
        started = first.wait_for(STARTED_RE.pattern)
        node_id, port = started.group(1), started.group(3)
        with dht_node("--listen", "127.0.0.1:0", "--bootstrap", f"127.0.0.1:{port}",
                      "--peers-interval", "0.2") as second:
            assert "peer discovery" not in second.wait_for(STARTED_RE.pattern).string
            # the peers a node reports are those that answered its probe lookup; the first
            # node's probes also wait on what its peer discovery found (on loopback: the
            # second node's eth address, where it does not listen), so read the second's
            second.wait_for(r"good DHT peers: 1")
            assert second.stop(signal.SIGTERM) == 0
        assert first.stop(signal.SIGTERM) == 0
    assert (data / NODE_ID_FILE).read_text().strip() == node_id
    assert (data.stat().st_mode & 0o777) == 0o700
    with dht_node("--listen", "127.0.0.1:0", "--data-dir", str(data)) as again:
        assert again.wait_for(STARTED_RE.pattern).group(1) == node_id
        assert again.stop(signal.SIGINT) == 0


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(*args), capture_output=True, text=True,
                          timeout=DEADLINE_S, check=False)


def test_busy_port_and_bad_addresses_exit_non_zero_with_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        done = _run("--listen", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"meshcomm dht-node: cannot bind UDP 127.0.0.1:{port}: Address already in use"]
    for listen, status in (("nonsense", 2), ("127.0.0.1", 2), ("[127.0.0.1]:4222", 2),
                           ("::1:4222", 2), ("dht.example.org:4222", 2),
                           ("127.0.0.1:70000", 2), ("192.0.2.254:4222", 1)):
        done = _run("--listen", listen)
        assert done.returncode == status, listen
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("meshcomm dht-node: "), lines
    done = _run("--listen", "127.0.0.1:0", "--bootstrap", "nowhere")
    assert done.returncode == 2 and "HOST:PORT" in done.stderr


def test_unwritable_data_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = _run("--listen", "127.0.0.1:0", "--data-dir", str(blocker / "dht"))
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "data dir" in done.stderr


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:4222") == DhtBind(None, None, 4222)
    assert parse_listen("[::]:0") == DhtBind(None, None, 0)
    assert parse_listen("192.0.2.10:4222") == DhtBind("192.0.2.10", None, 4222)
    assert parse_listen("[2001:db8::10]:4222") == DhtBind(None, "2001:db8::10", 4222)
    for bad in ("", ":4222", "host:4222", "1.2.3.4:", "1.2.3.4:-1", "[1.2.3.4]:1"):
        with pytest.raises(ConfigError, match="--listen"):
            parse_listen(bad)


def test_help_lists_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "meshcomm.cli.main", "--help"],
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert "dht-node" in done.stdout
