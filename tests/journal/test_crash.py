"""Crash safety: kill -9 a writer mid-run; nothing reported written is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from meshcomm.journal.events import JournalEventType
from meshcomm.journal.store import JournalStore
from meshcomm.journal.verify import verify_journal
from tests.journal.helpers import NODE_ID

WRITER = Path(__file__).with_name("crash_writer.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Durable seqs to read from the child before killing it, per round.
KILL_AFTER_LINES = (300, 170)
CHILD_TIMEOUT_S = 20.0


def run_writer_and_kill(path: Path, lines_before_kill: int) -> int:
    """Start the writer, read ``lines_before_kill`` durable seqs, SIGKILL it mid-run.

    Returns the highest seq the child reported durable (including lines still in the
    pipe after the kill: each was printed only after flush() returned).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, str(WRITER), str(path), NODE_ID.hex()],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             text=True)
    assert child.stdout is not None
    reported: list[int] = []
    try:
        for line in child.stdout:
            reported.append(int(line))
            if len(reported) >= lines_before_kill:
                break
        child.send_signal(signal.SIGKILL)  # the child is still appending and flushing
        rest, errors = child.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, errors
    reported.extend(int(line) for line in rest.splitlines() if line.strip())
    assert len(reported) >= lines_before_kill, errors
    assert reported == sorted(reported)
    return reported[-1]


def test_kill_9_loses_no_reported_entry_and_chain_continues(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    last_reported = 0
    for lines in KILL_AFTER_LINES:
        last_reported = run_writer_and_kill(path, lines)
        report = verify_journal(path)
        assert report.ok, report.problems
        assert report.head is not None and report.head[0] >= last_reported
        with JournalStore.open(path, NODE_ID) as store:
            seqs = [entry.seq for entry in store.entries()]
            assert seqs == list(range(1, len(seqs) + 1))  # nothing missing before the head
            assert seqs[-1] >= last_reported
            head = store.head()
            assert head == report.head
            entry = store.append(JournalEventType.NODE_STARTED, {"after": "crash"}, 0.0, 0.0)
            assert entry.seq == head[0] + 1 and entry.prev_hash == head[1]
            assert store.flush() == entry.seq
        assert verify_journal(path).ok
    assert last_reported > sum(KILL_AFTER_LINES)  # the second round continued the first
