"""The node's SQLite files: private, durable, and no readable copy of what was removed."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from meshcomm.sqlitefile import open_durable

SCHEMA = "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);"
MARKER = b"the-plaintext-that-must-go-" * 8


def _file_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def _write_then_remove(conn: sqlite3.Connection) -> None:
    for i in range(50):
        conn.execute("INSERT INTO t (body) VALUES (?)", (MARKER + bytes([i]),))
    conn.execute("UPDATE t SET body = ? WHERE id = 1", (b"sealed" * 40,))
    conn.execute("DELETE FROM t WHERE id > 1")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_a_removed_or_overwritten_row_leaves_no_copy_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    conn = open_durable(path, SCHEMA)
    try:
        _write_then_remove(conn)
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    finally:
        conn.close()
    assert MARKER not in _file_bytes(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_same_steps_without_secure_delete_leave_a_copy(tmp_path: Path) -> None:
    """The check above can fail: plain SQLite keeps freed content in the file."""
    path = tmp_path / "plain.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA secure_delete=OFF")
        conn.executescript(SCHEMA)
        _write_then_remove(conn)
    finally:
        conn.close()
    assert MARKER in _file_bytes(path)
