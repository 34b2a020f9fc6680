"""The journal on a real disk that fills up: bounded buffer, counted drops, a chain that
verifies once the disk takes writes again, rate-limited logs, a close that does not raise."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from meshcomm.journal.events import JournalEventType
from meshcomm.journal.store import (
    DROPPED_ENTRY_TYPE,
    MAX_PENDING_BYTES,
    MAX_PENDING_ENTRIES,
    ROW_OVERHEAD_BYTES,
    JournalStore,
)
from meshcomm.journal.verify import verify_journal
from tests.journal.helpers import NODE_ID, event_data, signer, signing_key
from tests.runtime.disk import SmallDisk

STORE_LOGGER = "meshcomm.journal.store"


def _append(store: JournalStore, first: int, count: int) -> list[bool]:
    return [store.append(JournalEventType.NEIGHBOUR_UP, event_data(i), float(i),
                         1.7e9 + i) is not None for i in range(first, first + count)]


def test_full_disk_buffers_then_drops_and_the_chain_stays_verifiable(
        small_disk: SmallDisk, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=STORE_LOGGER)
    path = small_disk.path / "journal.sqlite"
    key = signing_key()
    store = JournalStore.open(path, NODE_ID)
    _append(store, 0, 20)
    assert store.flush() == 20
    small_disk.fill()
    accepted = _append(store, 20, MAX_PENDING_ENTRIES + 500)
    with pytest.raises(sqlite3.OperationalError):
        store.flush()
    status = store.status()
    assert status["writable"] is False
    assert status["last_error"] == f"no space left on device writing {path}"
    assert status["durable_seq"] == 20
    # the buffer took exactly its bound, the rest was counted, not chained
    assert accepted.count(True) == MAX_PENDING_ENTRIES
    assert store.pending_count == MAX_PENDING_ENTRIES
    assert store.dropped_total == 500 == status["dropped"]
    assert store.checkpoint(signer(key), 9e3, 9e3) is None        # dropped as well
    assert store.dropped_total == 501
    for _ in range(50):                       # the runtime's per-event flush: rate-limited
        store.flush_due()
    small_disk.free()
    last = store.flush()
    assert last == 20 + MAX_PENDING_ENTRIES + 1          # the buffer, then one drop record
    assert store.status()["writable"] is True
    store.checkpoint(signer(key), 1e4, 1e4)
    store.close()
    report = verify_journal(path, bytes(key.verify_key))
    assert report.ok and report.count == last + 1 and report.checkpoints == 1
    with JournalStore.open(path, NODE_ID) as reopened:
        entries = list(reopened.entries())
    drop = entries[last - 1]
    assert drop.type == DROPPED_ENTRY_TYPE
    assert drop.data["count"] == 501
    assert drop.data["types"] == {"journal.checkpoint": 1, "neighbour.up": 500}
    assert drop.data["first_mono_s"] == float(20 + MAX_PENDING_ENTRIES)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    # one line when writing failed, one when dropping began; none per retry
    assert len(errors) == 2, [r.getMessage() for r in errors]
    assert all(r.exc_info is None for r in caplog.records)
    assert any("written again" in r.getMessage() for r in caplog.records)


def test_close_on_a_full_disk_logs_one_line_and_closes(small_disk: SmallDisk,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=STORE_LOGGER)
    path = small_disk.path / "journal.sqlite"
    store = JournalStore.open(path, NODE_ID)
    _append(store, 0, 5)
    store.flush()
    small_disk.fill()
    _append(store, 5, 300)
    store.close()                            # does not raise
    assert store.lost_at_close == 300
    store.close()                            # idempotent
    closing = [r for r in caplog.records if "at close" in r.getMessage()]
    assert len(closing) == 1 and closing[0].exc_info is None
    small_disk.free()
    with JournalStore.open(path, NODE_ID) as reopened:    # continues from what is on disk
        assert reopened.durable_seq == 5
        _append(reopened, 5, 3)
    report = verify_journal(path)
    assert report.ok and report.count == 8


def test_journal_that_cannot_be_created_is_an_operational_error(small_disk: SmallDisk) -> None:
    small_disk.fill()
    with pytest.raises((sqlite3.OperationalError, OSError)):
        JournalStore.open(small_disk.path / "new.sqlite", NODE_ID)


def test_status_of_a_healthy_journal(tmp_path: Path) -> None:
    with JournalStore.open(tmp_path / "j.sqlite", NODE_ID) as store:
        _append(store, 0, 3)
        assert store.status() == {
            "path": str(tmp_path / "j.sqlite"), "durable_seq": 0, "head_seq": 3,
            "writable": True, "last_error": None, "pending": 3,
            "max_pending": MAX_PENDING_ENTRIES, "dropped": 0, "write_errors": 0}
        store.flush()
        assert store.status()["durable_seq"] == 3


def test_buffer_is_bounded_in_bytes_too(small_disk: SmallDisk) -> None:
    store = JournalStore.open(small_disk.path / "journal.sqlite", NODE_ID)
    small_disk.fill()
    big = {"blob": b"\x5a" * 60_000}
    accepted = sum(store.append(JournalEventType.SIP_MESSAGE, big, float(i), 0.0) is not None
                   for i in range(200))
    per_entry = 60_000 + ROW_OVERHEAD_BYTES
    assert accepted == -(-MAX_PENDING_BYTES // per_entry)     # stops at the byte bound
    assert store.dropped_total == 200 - accepted
    store.close()
    assert store.lost_at_close == 200


def test_a_burst_on_a_healthy_disk_is_flushed_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with JournalStore.open(path, NODE_ID) as store:
        count = 3 * MAX_PENDING_ENTRIES + 7          # no flush between the appends
        assert all(_append(store, 0, count))
        assert store.dropped_total == 0
        assert store.pending_count <= MAX_PENDING_ENTRIES
        assert store.durable_seq == 3 * MAX_PENDING_ENTRIES
    report = verify_journal(path)
    assert report.ok and report.count == count
