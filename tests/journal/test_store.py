"""SQLite store: durability settings, resume, ownership, and a verifier that reads
journals tampered with by hand through sqlite3."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.journal.chain import JournalChain, JournalEntry
from meshcomm.journal.codec import normalize_data
from meshcomm.journal.events import JournalEventType, JournalRecord
from meshcomm.journal.store import JournalOwnerError, JournalStore
from meshcomm.journal.verify import ProblemKind, verify_journal
from tests.journal.helpers import NODE_ID, OTHER_NODE_ID, event_data, signer, signing_key

COUNT = 12


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"


def fill(path: Path, count: int = COUNT, checkpoint_after: int | None = None) -> None:
    key = signing_key()
    with JournalStore.open(path, NODE_ID) as store:
        for i in range(count):
            store.append(JournalEventType.NEIGHBOUR_UP, event_data(i), 5.0 + i, 1.7e9 + i)
            if checkpoint_after is not None and i + 1 == checkpoint_after:
                store.checkpoint(signer(key), 5.0 + i, 1.7e9 + i)
            if i % 5 == 4:
                store.flush()


def tamper(path: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(path)
    try:
        for sql in statements:
            conn.execute(sql, params if "?" in sql else ())
        conn.commit()
    finally:
        conn.close()


def found(path: Path, public_key: bytes | None = None) -> list[tuple[int, ProblemKind]]:
    return [(p.seq, p.kind) for p in verify_journal(path, public_key).problems]


@pytest.fixture
def store(journal_path: Path) -> Iterator[JournalStore]:
    opened = JournalStore.open(journal_path, NODE_ID)
    yield opened
    opened.close()


def test_file_is_private_and_in_wal_mode(store: JournalStore, journal_path: Path) -> None:
    store.append(JournalEventType.NODE_STARTED, {}, 0.0, 0.0)
    store.flush()
    for path in journal_path.parent.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    conn = sqlite3.connect(journal_path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_only_flushed_entries_are_written(store: JournalStore) -> None:
    written = [store.append(JournalEventType.BINDING_LEARNED, event_data(i), float(i), 0.5)
               for i in range(3)]
    assert list(store.entries()) == []
    assert store.pending_count == 3 and store.durable_seq == 0
    assert store.head() == (3, written[-1].entry_hash)
    assert store.flush() == 3
    assert store.flush() == 3  # nothing pending: no new transaction, same answer
    assert list(store.entries()) == written  # bit-exact round trip through SQLite
    assert list(store.entries(start_seq=2)) == written[1:]


def test_reopen_resumes_the_chain(journal_path: Path) -> None:
    fill(journal_path)
    with JournalStore.open(journal_path, NODE_ID) as store:
        last = list(store.entries())[-1]
        assert store.head() == (COUNT, last.entry_hash)
        entry = store.append(JournalEventType.NODE_STARTED, {"again": True}, 0.0, 0.0)
        assert entry.seq == COUNT + 1 and entry.prev_hash == last.entry_hash
    report = verify_journal(journal_path)
    assert report.ok and report.count == COUNT + 1 and report.head is not None
    assert report.head[0] == COUNT + 1


def test_close_flushes_and_is_idempotent(journal_path: Path) -> None:
    store = JournalStore.open(journal_path, NODE_ID)
    store.append(JournalEventType.NODE_STOPPED, {}, 1.0, 1.0)
    store.close()
    store.close()
    with pytest.raises(LocalProtocolError):
        store.append(JournalEventType.NODE_STOPPED, {}, 1.0, 1.0)
    assert verify_journal(journal_path).count == 1


def test_journal_of_another_node_is_refused(journal_path: Path) -> None:
    JournalStore.open(journal_path, NODE_ID).close()  # empty journal still has an owner
    with pytest.raises(JournalOwnerError):
        JournalStore.open(journal_path, OTHER_NODE_ID)
    fill(journal_path, 3)
    with pytest.raises(JournalOwnerError):
        JournalStore.open(journal_path, OTHER_NODE_ID)


def test_not_a_database_is_a_decode_error(journal_path: Path) -> None:
    journal_path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DecodeError):
        JournalStore.open(journal_path, NODE_ID)


def test_unreadable_last_row_stops_resume_but_not_readers(journal_path: Path) -> None:
    fill(journal_path, 4)
    tamper(journal_path, "UPDATE entries SET data = X'c1' WHERE seq = 4")
    with pytest.raises(DecodeError):
        JournalStore.open(journal_path, NODE_ID)
    tamper(journal_path, "UPDATE entries SET data = X'c1' WHERE seq = 2",
           "DELETE FROM entries WHERE seq = 4")
    with JournalStore.open(journal_path, NODE_ID) as store:
        entries = store.entries()
        assert next(entries).seq == 1
        with pytest.raises(DecodeError):
            next(entries)


def test_failed_flush_keeps_entries_buffered(store: JournalStore, journal_path: Path) -> None:
    entry = store.append(JournalEventType.ROUTE_CHANGED, {"to": b"n1"}, 0.0, 0.0)
    tamper(journal_path, "INSERT INTO entries VALUES (1, 0, 0, x'00', 't', x'80', x'00', x'00')")
    with pytest.raises(sqlite3.IntegrityError):
        store.flush()
    assert store.pending_count == 1
    tamper(journal_path, "DELETE FROM entries WHERE seq = 1")
    assert store.flush() == 1
    assert list(store.entries()) == [entry]


# --- the verifier on tampered files --------------------------------------------------------

def test_untouched_journal_verifies(journal_path: Path) -> None:
    fill(journal_path, checkpoint_after=6)
    key = bytes(signing_key().verify_key)
    report = verify_journal(journal_path, key)
    assert report.ok and report.count == COUNT + 1 and report.checkpoints == 1


def test_edited_data_is_named(journal_path: Path) -> None:
    fill(journal_path)
    _, forged = normalize_data({**event_data(4), "peer": b"\xee" * 8})
    tamper(journal_path, "UPDATE entries SET data = ? WHERE seq = 5", params=(forged,))
    assert found(journal_path) == [(5, ProblemKind.EDITED)]


@pytest.mark.parametrize("statement", [
    "UPDATE entries SET mono_s = mono_s + 1 WHERE seq = 5",
    "UPDATE entries SET wall_s = 0 WHERE seq = 5",
    "UPDATE entries SET type = 'neighbour.down' WHERE seq = 5",
    "UPDATE entries SET node_id = x'0102' WHERE seq = 5",
])
def test_edited_columns_are_named(journal_path: Path, statement: str) -> None:
    fill(journal_path)
    tamper(journal_path, statement)
    assert found(journal_path) == [(5, ProblemKind.EDITED)]


@pytest.mark.parametrize("statement", [
    "UPDATE entries SET data = x'ffff' WHERE seq = 5",
    "UPDATE entries SET data = 'plain text' WHERE seq = 5",
    "UPDATE entries SET data = NULL WHERE seq = 5" ,
    "UPDATE entries SET type = CAST(x'ff80' AS TEXT) WHERE seq = 5",
    "UPDATE entries SET prev_hash = x'00' WHERE seq = 5",
    "UPDATE entries SET mono_s = 'soon' WHERE seq = 5",
])
def test_garbage_rows_are_reported_not_crashed_on(journal_path: Path, statement: str) -> None:
    fill(journal_path)
    if "NULL" in statement:  # the schema forbids NULL: replace the table to allow it
        tamper(journal_path, "CREATE TABLE e2 AS SELECT * FROM entries",
               "DROP TABLE entries", "ALTER TABLE e2 RENAME TO entries")
    tamper(journal_path, statement)
    assert found(journal_path) == [(5, ProblemKind.UNDECODABLE)]


def test_removed_entry_is_named(journal_path: Path) -> None:
    fill(journal_path)
    tamper(journal_path, "DELETE FROM entries WHERE seq = 5")
    assert found(journal_path) == [(5, ProblemKind.REMOVED)]
    tamper(journal_path, "DELETE FROM entries WHERE seq IN (8, 9, 10)")
    report = verify_journal(journal_path)
    assert [(p.seq, p.kind) for p in report.problems] == [
        (5, ProblemKind.REMOVED), (8, ProblemKind.REMOVED)]
    assert "8..10" in report.problems[1].message


def test_removed_first_entry_is_named(journal_path: Path) -> None:
    fill(journal_path)
    tamper(journal_path, "DELETE FROM entries WHERE seq = 1")
    assert found(journal_path) == [(1, ProblemKind.REMOVED)]


def test_removal_hidden_by_renumbering_is_named(journal_path: Path) -> None:
    fill(journal_path)
    tamper(journal_path, "DELETE FROM entries WHERE seq = 5",
           "UPDATE entries SET seq = seq - 1 WHERE seq > 5")
    problems = found(journal_path)
    assert problems[0] == (5, ProblemKind.REMOVED)
    assert {kind for _, kind in problems[1:]} == {ProblemKind.REORDERED}


def test_swapped_rows_are_named(journal_path: Path) -> None:
    fill(journal_path)
    tamper(journal_path, "UPDATE entries SET seq = -5 WHERE seq = 5",
           "UPDATE entries SET seq = 5 WHERE seq = 6",
           "UPDATE entries SET seq = 6 WHERE seq = -5")
    report = verify_journal(journal_path)
    assert [(p.seq, p.kind) for p in report.problems] == [
        (5, ProblemKind.REORDERED), (6, ProblemKind.REORDERED)]
    assert "written as seq 6" in report.problems[0].message


def test_row_moved_far_away_is_reordered_not_removed(journal_path: Path) -> None:
    fill(journal_path)
    tamper(journal_path, "UPDATE entries SET seq = 1000 WHERE seq = 3")
    assert found(journal_path) == [(1000, ProblemKind.REORDERED)]


def replacement_row(path: Path, seq: int) -> tuple[object, ...]:
    """A forged entry for ``seq`` with a correctly recomputed hash over the stored prev."""
    conn = sqlite3.connect(path)
    prev_seq, prev_hash = conn.execute(
        "SELECT seq, entry_hash FROM entries WHERE seq = ?", (seq - 1,)).fetchone()
    conn.close()
    chain = JournalChain(NODE_ID, head=(prev_seq, prev_hash))
    entry, data = chain.append_encoded(JournalEventType.BINDING_LEARNED, {"forged": 1}, 0.0, 0.0)
    return row_of(entry, data)


def row_of(entry: JournalEntry, data: bytes) -> tuple[object, ...]:
    return (entry.seq, entry.mono_s, entry.wall_s, entry.node_id, entry.type, data,
            entry.prev_hash, entry.entry_hash)


def test_replaced_entry_with_recomputed_hash_is_named(journal_path: Path) -> None:
    fill(journal_path)
    row = replacement_row(journal_path, 5)
    tamper(journal_path, "DELETE FROM entries WHERE seq = 5",
           "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", params=row)
    assert found(journal_path) == [(5, ProblemKind.EDITED)]


def test_rewritten_history_before_a_checkpoint_is_caught(journal_path: Path) -> None:
    fill(journal_path, checkpoint_after=8)
    conn = sqlite3.connect(journal_path)
    rows = conn.execute("SELECT * FROM entries ORDER BY seq").fetchall()
    conn.close()
    # The forger rewrites entry 3 and recomputes every later hash, and fixes the
    # checkpoint's head_hash, but cannot re-sign it.
    chain = JournalChain(NODE_ID, head=(rows[1][0], rows[1][7]))
    forged: list[tuple[object, ...]] = []
    for row in rows[2:]:
        data = msgpack.unpackb(row[5])
        if row[0] == 3:
            data["i"] = 1234
        if row[4] == JournalEventType.CHECKPOINT:
            data["head_hash"] = (chain.head or (0, b""))[1]
        entry, encoded = chain.append_encoded(row[4], data, row[1], row[2])
        forged.append(row_of(entry, encoded))
    tamper(journal_path, "DELETE FROM entries WHERE seq >= 3")
    for row in forged:
        tamper(journal_path, "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", params=row)
    assert found(journal_path) == []  # consistent without the key...
    key = bytes(signing_key().verify_key)
    assert found(journal_path, key) == [(9, ProblemKind.BAD_CHECKPOINT)]


def test_checkpoint_with_edited_head_is_bad(journal_path: Path) -> None:
    fill(journal_path, checkpoint_after=8)
    with JournalStore.open(journal_path, NODE_ID) as store:
        checkpoint = next(e for e in store.entries() if e.type == JournalEventType.CHECKPOINT)
    data = {**checkpoint.data, "head_seq": 3}
    chain = JournalChain(NODE_ID, head=(8, checkpoint.prev_hash))
    entry, encoded = chain.append_encoded(JournalEventType.CHECKPOINT, data, 0.0, 0.0)
    tamper(journal_path, "DELETE FROM entries WHERE seq >= 9")
    tamper(journal_path, "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
           params=row_of(entry, encoded))
    assert found(journal_path) == [(9, ProblemKind.BAD_CHECKPOINT)]


def test_truncated_tail_is_caught_with_an_expected_head(journal_path: Path) -> None:
    fill(journal_path)
    head = verify_journal(journal_path).head
    assert head is not None
    tamper(journal_path, "DELETE FROM entries WHERE seq > 9")
    assert verify_journal(journal_path).ok  # nothing inside the file shows it...
    report = verify_journal(journal_path, expected_head=head)
    assert [(p.seq, p.kind) for p in report.problems] == [(COUNT, ProblemKind.REMOVED)]


def test_damaged_database_file_is_reported(journal_path: Path) -> None:
    fill(journal_path, 400)
    raw = bytearray(journal_path.read_bytes())
    assert len(raw) > 8192
    raw[4096:8192] = b"\xa5" * 4096  # clobber a b-tree page
    journal_path.write_bytes(bytes(raw))
    report = verify_journal(journal_path)
    assert not report.ok
    assert ProblemKind.UNDECODABLE in {p.kind for p in report.problems}


def test_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        verify_journal(tmp_path / "absent.sqlite")
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    assert found(other) == [(1, ProblemKind.UNDECODABLE)]


def test_records_from_cores_are_stamped_and_stored(store: JournalStore) -> None:
    record = JournalRecord(JournalEventType.BINDING_CONFLICT,
                           {"aor": "sip:medic-7@fire.example", "holder": b"\x01" * 32})
    entry = store.append_record(record, mono_s=12.5, wall_s=1.7e9)
    store.flush()
    (stored,) = store.entries()
    assert stored == entry
    assert (stored.type, stored.mono_s, stored.wall_s) == ("binding.conflict", 12.5, 1.7e9)
    assert stored.data == record.data
