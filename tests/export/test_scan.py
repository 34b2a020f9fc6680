"""The export's one verifying pass (meshcomm/export/reader.Snapshot.scan, with
journal/audit.StreamVerifier): the same report as ``meshcomm journal verify`` for honest
and tampered journals alike, every entry handed on as it goes, and one read transaction
for both passes (a node still appending does not change what the merge reads)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack
import pytest

from meshcomm.export.reader import Snapshot
from meshcomm.export.timeline import light
from meshcomm.journal.chain import JournalEntry
from meshcomm.journal.codec import compute_entry_hash
from meshcomm.journal.store import JournalStore
from meshcomm.journal.verify import verify_journal
from meshcomm.security.identity import Identity

WHO = Identity(b"\x31" * 32)


def _journal(path: Path, entries: int = 60) -> Path:
    with JournalStore.open(path, WHO.node_id) as store:
        for i in range(entries):
            store.append("note", {"i": i, "text": f"entry {i}", "z": [1.5, {"b": b"x"}]},
                         float(i), 1000.0 + i)
            if i % 20 == 19:
                store.checkpoint(WHO.sign, float(i), 1000.0 + i)
        store.flush()
    return path


def _sql(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    conn = sqlite3.connect(path)
    for text, args in statements:
        conn.execute(text, args)
    conn.commit()
    conn.close()


def _row(path: Path, seq: int) -> tuple[object, ...]:
    conn = sqlite3.connect(path)
    row = conn.execute("SELECT * FROM entries WHERE seq = ?", (seq,)).fetchone()
    conn.close()
    return tuple(row)


def _resealed_unsorted(path: Path) -> None:
    """Entry 5 stored with its keys out of order and its hash computed over those bytes
    (what only a forger writes): the journal verifier calls it edited."""
    seq, mono, wall, node, type_, data, prev, _ = _row(path, 5)
    value = msgpack.unpackb(data)
    blob = msgpack.packb(dict(reversed(list(value.items()))), use_bin_type=True)
    digest = compute_entry_hash(prev, seq, mono, wall, node, type_, blob)
    _sql(path, ("UPDATE entries SET data = ?, entry_hash = ? WHERE seq = 5", (blob, digest)),
         ("UPDATE entries SET prev_hash = ? WHERE seq = 6", (digest,)))


TAMPERINGS = {
    "honest": [],
    "edited": [("UPDATE entries SET wall_s = wall_s + 1 WHERE seq = 7", ())],
    "removed": [("DELETE FROM entries WHERE seq IN (10, 11)", ())],
    "reordered": [("UPDATE entries SET seq = -1 WHERE seq = 12", ()),
                  ("UPDATE entries SET seq = 12 WHERE seq = 13", ()),
                  ("UPDATE entries SET seq = 13 WHERE seq = -1", ())],
    "truncated": [("DELETE FROM entries WHERE seq > 50", ())],
    "undecodable": [("UPDATE entries SET data = X'c1' WHERE seq = 30", ())],
    "bad type": [("UPDATE entries SET type = X'ff' WHERE seq = 31", ())],
    "unsorted keys, same hash": [],            # filled in by the test: see below
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_the_one_pass_reports_what_journal_verify_reports(tmp_path: Path, name: str) -> None:
    path = _journal(tmp_path / "journal.sqlite")
    _sql(path, *TAMPERINGS[name])
    if name == "unsorted keys, same hash":
        *_, data, _prev, _hash = _row(path, 4)
        value = msgpack.unpackb(data)
        _sql(path, ("UPDATE entries SET data = ? WHERE seq = 4",
                    (msgpack.packb(dict(reversed(list(value.items()))), use_bin_type=True),)))
    for key in (None, WHO.public_key):
        expected = verify_journal(path, key)
        seen: list[JournalEntry] = []
        with Snapshot(path) as snapshot:
            assert snapshot.scan(key, seen.append) == expected, name
            merged = list(snapshot.entries())
            assert list(snapshot.light_entries()) == list(light(merged))
        assert [e.seq for e in seen] == [e.seq for e in merged]
        assert seen == merged
        assert expected.ok == (name in ("honest", "truncated", "unsorted keys, same hash"))


def test_a_forger_s_non_canonical_bytes_are_named_as_journal_verify_names_them(
        tmp_path: Path) -> None:
    path = _journal(tmp_path / "journal.sqlite")
    _resealed_unsorted(path)
    expected = verify_journal(path, WHO.public_key)
    assert not expected.ok
    with Snapshot(path) as snapshot:
        assert snapshot.scan(WHO.public_key) == expected
        assert not snapshot.canonical


def test_both_passes_read_one_snapshot_while_the_node_appends(tmp_path: Path) -> None:
    path = _journal(tmp_path / "journal.sqlite", entries=30)
    with Snapshot(path) as snapshot:
        report = snapshot.scan(WHO.public_key)
        assert report.ok and snapshot.canonical
        with JournalStore.open(path, WHO.node_id) as store:   # the node goes on
            for i in range(10):
                store.append("note", {"i": 100 + i}, 100.0, 2000.0 + i)
            store.flush()
        assert len(list(snapshot.entries())) == report.count == 31
    with Snapshot(path) as later:
        assert later.scan(WHO.public_key).count == 41


def test_a_file_that_is_no_journal_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"not a database" * 100)
    expected = verify_journal(path)
    with Snapshot(path) as snapshot:
        report = snapshot.scan(None)
        assert list(snapshot.entries()) == []
    assert not report.ok and not report.readable
    assert [(p.seq, p.kind) for p in report.problems] == [
        (p.seq, p.kind) for p in expected.problems]
