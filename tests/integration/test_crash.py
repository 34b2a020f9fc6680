"""Crash safety of a real node: SIGKILL mid-run loses no journal entry reported written.

Two handsets in two namespaces. A thread in node 1's namespace keeps sending validly signed
bindings of fresh keys from fresh source ports to node 0, so node 0 journals continuously
(each binding it admits, about 50 a second from one neighbour, and rate-limited drops of
the rest; garbage alone no longer grows a journal fast, issue 7) and the kill lands while
it is writing. The test reads the journal's
durable seq from ``ctl status``, takes the stored entries up to it, kills node 0 with
SIGKILL, restarts it on the same data dir, and checks: every entry up to that seq is still
there unchanged, the hash chain verifies, and the journal continues (new entries after the
old head, a new boot epoch).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from meshcomm.journal.events import JournalEventType
from meshcomm.journal.store import ROW_COLUMNS
from meshcomm.journal.verify import verify_journal
from meshcomm.location.binding import make_binding
from meshcomm.runtime.app import JOURNAL_FILE, data_dir_locked
from meshcomm.security.identity import Identity
from meshcomm.security.keystore import load_or_create_identity
from meshcomm.wire.envelope import Hop, encode_frame
from radios.udp import DEFAULT_PORT, MULTICAST_GROUP_V6
from tests.envcheck import require_root
from tools.testbed import Testbed, chain
from tools.testbed.nodes import MeshProcess, wait_until

WAIT_S = 15.0
#: Journal entries the node must have written before the kill.
MIN_ENTRIES_BEFORE_KILL = 50
#: Bindings per burst and pause between bursts of the load thread.
LOAD_BURST = 20
LOAD_PAUSE_S = 0.01
#: The test bed's nodes run the default field config's incident.
INCIDENT = "default"

pytestmark = [pytest.mark.root, pytest.mark.slow]


@contextmanager
def binding_load(tb: Testbed, node: int, iface: str) -> Iterator[list[int]]:
    """Send bindings of fresh keys to the mesh group from ``node`` (fresh source port per
    datagram)."""
    stop = threading.Event()
    sent = [0]

    def run() -> None:
        with tb.entered(node):
            index = socket.if_nametoindex(iface)
            while not stop.is_set():
                for _ in range(LOAD_BURST):
                    binding = make_binding(Identity(os.urandom(32)), incident=INCIDENT,
                                           seq=1, aor=f"sip:load-{sent[0]}@incident.local",
                                           contacts=(), issued_at=time.time(),
                                           lifetime_s=300)
                    frame = encode_frame(binding.envelope, Hop(ttl=1))
                    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                        sock.sendto(frame,
                                    (MULTICAST_GROUP_V6, DEFAULT_PORT, 0, index))
                        sent[0] += 1
                stop.wait(LOAD_PAUSE_S)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join()


def _rows(path: Path, upto_seq: int) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        cur = conn.execute(f"SELECT {ROW_COLUMNS} FROM entries WHERE seq <= ? ORDER BY seq",
                           (upto_seq,))
        return list(cur)
    finally:
        conn.close()


def _nodes_known(node: MeshProcess) -> set[str]:
    """The AoRs of the test bed's nodes a node lists (not the load's fresh keys)."""
    return {a for a in node.who_aors() or () if not a.startswith("sip:load-")}


def _status(node: MeshProcess) -> dict[str, object]:
    status = node.request("status")
    assert isinstance(status, dict)
    return status


def _durable_seq(node: MeshProcess) -> int:
    journal = _status(node)["journal"]
    assert isinstance(journal, dict)
    seq = journal["durable_seq"]
    assert isinstance(seq, int)
    return seq


def test_sigkill_loses_no_reported_journal_entry(tmp_path: Path) -> None:
    require_root()
    with chain(2) as tb:
        tb.use_workdir(tmp_path)
        nodes = [tb.start_node(i, impair="loss=0.1", wait=False) for i in range(2)]
        victim = nodes[0]
        ok = wait_until(lambda: all(len(_nodes_known(n)) == 2 for n in nodes), WAIT_S)
        assert ok is not None, tb.describe()
        journal = victim.data_dir / JOURNAL_FILE
        with binding_load(tb, 1, tb.iface(1, 0)) as sent:
            busy = wait_until(lambda: _durable_seq(victim) >= MIN_ENTRIES_BEFORE_KILL,
                              WAIT_S)
            assert busy is not None, f"{sent[0]} sent; " + tb.describe()
            reported = _durable_seq(victim)
            before = _rows(journal, reported)
            assert victim.proc is not None
            os.killpg(victim.proc.pid, signal.SIGKILL)  # mid-run, no chance to clean up
            assert victim.proc.wait(timeout=WAIT_S) == -signal.SIGKILL
        assert not data_dir_locked(victim.data_dir)

        rows = _rows(journal, reported)
        assert [r[0] for r in rows] == list(range(1, reported + 1))
        assert rows == before

        ident, _ = load_or_create_identity(victim.data_dir)
        tb.restart_node(victim.index, signal.SIGKILL, wait=False)  # already dead: starts it
        restarted = wait_until(lambda: victim.who_aors() is not None
                               and _durable_seq(victim) > reported + 1, WAIT_S)
        assert restarted is not None, tb.describe()
        status = _status(victim)
        assert status["node_id"] == ident.node_id.hex()
        assert status["boot_epoch"] == 2

        assert wait_until(lambda: len(_nodes_known(victim)) == 2, WAIT_S) is not None
        assert _rows(journal, reported) == before
        report = verify_journal(journal, ident.public_key)
        assert report.ok, report.problems
        assert report.count > reported
        types = [r[4] for r in _rows(journal, 10**9)[reported:]]
        assert JournalEventType.NODE_STARTED.value in types
        print(f"\ncrash safety: {reported} entries reported written before SIGKILL, "
              f"all present after restart; journal continued to {report.count} entries "
              f"and verifies")
