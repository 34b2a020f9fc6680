"""SQLite persistence of the freshness memory (an IO adapter: it may touch the disk).

The sans-IO :class:`~meshcomm.location.freshness.FreshnessMemory` collects its changes; the
runtime takes them (:meth:`meshcomm.node.mesh.MeshNode.take_freshness_updates`) and applies
them here *before* it transmits what the same input produced, so a binding this node
re-floods is remembered on disk first. On restart :meth:`FreshnessStore.load` returns the
entries still in force, to :meth:`FreshnessMemory.restore`.

One file per node (``freshness.sqlite``), WAL mode with ``synchronous=FULL``. Table
``fresh``: record id, highest sequence (8 bytes big-endian: SQLite integers are signed),
first acceptance and keep-until wall times, standing. Rows read back are untrusted:
:func:`decode_fresh_row_untrusted` raises only DecodeError and a bad row is skipped.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from meshcomm.errors import ConfigError, DecodeError, LocalProtocolError
from meshcomm.location.binding import MAX_WALL_TIME_S, RECORD_ID_LEN
from meshcomm.location.freshness import (
    MAX_FRESHNESS_ENTRIES,
    FreshEntry,
    FreshnessUpdates,
    Standing,
)
from meshcomm.sqlitefile import open_store

log = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1
SEQ_BYTES: Final = 8
#: Corrupt rows reported one by one in the log; the rest only counted.
MAX_LOGGED_ROWS: Final = 10
#: Every this many writes the file is trimmed to the best MAX_FRESHNESS_ENTRIES rows (a
#: removal the memory could not hand over while the disk failed is caught up this way).
TRIM_EVERY_WRITES: Final = 256

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS fresh (
    record_id BLOB PRIMARY KEY,
    seq BLOB NOT NULL,
    first_wall REAL NOT NULL,
    keep_until REAL NOT NULL,
    standing INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS fresh_keep ON fresh (keep_until);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
COLUMNS: Final = "record_id, seq, first_wall, keep_until, standing"
_ROW_LEN: Final = 5
_UPSERT: Final = (f"INSERT OR REPLACE INTO fresh ({COLUMNS}) VALUES (?, ?, ?, ?, ?)")


def _wall(value: object, what: str) -> float:
    if type(value) not in (int, float):
        raise DecodeError(f"{what} is not a number")
    wall = float(value)  # type: ignore[arg-type]
    if not math.isfinite(wall) or not 0.0 <= wall <= MAX_WALL_TIME_S:
        raise DecodeError(f"{what} out of range")
    return wall


def decode_fresh_row_untrusted(row: Sequence[object]) -> FreshEntry:
    """A ``fresh`` row (columns :data:`COLUMNS`) as a FreshEntry; raises only DecodeError."""
    if len(row) != _ROW_LEN:
        raise DecodeError("fresh row has the wrong number of columns")
    rid, seq, standing = row[0], row[1], row[4]
    if not isinstance(rid, bytes) or len(rid) != RECORD_ID_LEN:
        raise DecodeError("record_id is not an 8-byte blob")
    if not isinstance(seq, bytes) or len(seq) != SEQ_BYTES:
        raise DecodeError("seq is not an 8-byte blob")
    if type(standing) is not int or standing not in set(Standing):
        raise DecodeError("unknown standing")
    return FreshEntry(rid, int.from_bytes(seq, "big"), _wall(row[2], "first_wall"),
                      _wall(row[3], "keep_until"), Standing(standing))


class FreshnessStore:
    """The freshness database of one node. Use from one thread."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        #: Rows skipped by the last load because they did not decode.
        self.skipped_rows = 0
        self.max_entries = MAX_FRESHNESS_ENTRIES
        self._writes = 0

    @classmethod
    def open(cls, path: str | Path) -> FreshnessStore:
        """Open or create the database (mode 0600). ConfigError if it is not one of ours;
        sqlite3.OperationalError or OSError when the disk refuses."""
        p = Path(path)
        conn = open_store(p, _SCHEMA, "freshness", "a freshness database")
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('format', ?)",
                             (FORMAT_VERSION,))
            elif row[0] != FORMAT_VERSION:
                raise ConfigError("freshness", f"{p}: unsupported format {row[0]!r}")
        except BaseException:
            conn.close()
            raise
        return cls(conn, p)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LocalProtocolError("freshness store is closed")
        return self._conn

    def apply(self, updates: FreshnessUpdates) -> None:
        """Write upserts and removals durably, in one transaction."""
        if not updates:
            return
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_UPSERT, [
                (e.record_id, e.seq.to_bytes(SEQ_BYTES, "big"), e.first_wall,
                 e.keep_until_wall, int(e.standing)) for e in updates.upserts])
            conn.executemany("DELETE FROM fresh WHERE record_id = ?",
                             [(rid,) for rid in updates.removals])
            self._writes += 1
            if self._writes % TRIM_EVERY_WRITES == 0:
                self._trim(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _trim(self, conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM fresh WHERE record_id NOT IN (SELECT record_id FROM fresh "
                     "ORDER BY standing DESC, keep_until DESC LIMIT ?)", (self.max_entries,))

    def load(self, wall_now: float,
             max_entries: int = MAX_FRESHNESS_ENTRIES) -> list[FreshEntry]:
        """Entries still in force, oldest first (the best ``max_entries`` of them: highest
        standing, then latest); expired rows are deleted. Corrupt rows are skipped."""
        conn = self._db()
        conn.execute("DELETE FROM fresh WHERE keep_until < ?", (wall_now,))
        self.skipped_rows = 0
        entries: list[FreshEntry] = []
        rows = conn.execute(f"SELECT {COLUMNS} FROM fresh ORDER BY standing DESC, "
                            "keep_until DESC LIMIT ?", (max_entries,))
        for row in rows:
            try:
                entries.append(decode_fresh_row_untrusted(row))
            except DecodeError as exc:
                self.skipped_rows += 1
                if self.skipped_rows <= MAX_LOGGED_ROWS:
                    log.warning("%s: skipped a corrupt row: %s", self.path, exc)
        entries.sort(key=lambda e: e.keep_until_wall)
        return entries

    def count(self) -> int:
        row = self._db().execute("SELECT COUNT(*) FROM fresh").fetchone()
        return int(row[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> FreshnessStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
