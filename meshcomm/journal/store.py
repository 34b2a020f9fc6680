"""The SQLite adapter of the node journal (an IO adapter: it may touch the disk).

One file per node: table ``entries`` (one row per entry, ``seq INTEGER PRIMARY KEY``) and
a two-row ``meta`` table (format version, owner node id). WAL mode with
``synchronous=FULL``: a commit is on disk when :meth:`JournalStore.flush` returns, so a
``kill -9`` never loses an entry that was reported written.

:meth:`JournalStore.append` only builds the entry and buffers it; the runtime calls
:meth:`JournalStore.flush` once per event-loop turn, which writes the whole batch in one
transaction (one fsync per turn, not per entry). Only flushed entries count as written.

A disk that refuses writes (full, read-only, I/O errors) does not stop the node: entries
wait in the buffer, which holds at most :data:`MAX_PENDING_ENTRIES` entries and
:data:`MAX_PENDING_BYTES` bytes of data (a full buffer on a healthy disk, from a burst of
appends between two flushes, is flushed at once). Past that, new events are *not* added to the
chain (so it has no gap) but counted as dropped; the first flush that succeeds is followed
by one ``journal.dropped`` entry saying how many events were lost, of which types and
when, so the chain stays verifiable and the loss is on record (and covered by the next
signed checkpoint). Failures are logged once when they start, then at most once per
:data:`ERROR_LOG_INTERVAL_S`, and once when writing works again; :meth:`JournalStore.status`
reports them (``ctl status``). :meth:`JournalStore.flush_due` (the runtime's per-turn
flush) retries at most once per :data:`FLUSH_RETRY_INTERVAL_S` while writes fail.

Rows read back are untrusted (the file may have been edited by hand):
:func:`decode_row_untrusted` raises only :class:`~meshcomm.errors.DecodeError`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from meshcomm.diskio import disk_problem
from meshcomm.errors import ConfigError, DecodeError, LocalProtocolError
from meshcomm.journal.chain import JournalChain, JournalEntry, Signer
from meshcomm.journal.codec import (
    FIRST_SEQ,
    HASH_LEN,
    MAX_NODE_ID_BYTES,
    MAX_SEQ,
    MAX_TYPE_BYTES,
    decode_data_untrusted,
)
from meshcomm.journal.events import JournalEventType, JournalRecord
from meshcomm.sqlitefile import PRIVATE_FILE_MODE, open_durable

log = logging.getLogger(__name__)

#: On-disk format version, kept in ``meta``.
FORMAT_VERSION: Final = 1
#: File mode of a journal (and, through SQLite, of its -wal/-shm files).
JOURNAL_FILE_MODE: Final = PRIVATE_FILE_MODE
#: Rows fetched from SQLite per batch when iterating.
READ_BATCH_ROWS: Final = 256
#: Columns of ``entries`` in the order :func:`decode_row_untrusted` expects.
ROW_COLUMNS: Final = "seq, mono_s, wall_s, node_id, type, data, prev_hash, entry_hash"
_ROW_LEN: Final = 8

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    mono_s REAL NOT NULL,
    wall_s REAL NOT NULL,
    node_id BLOB NOT NULL,
    type TEXT NOT NULL,
    data BLOB NOT NULL,
    prev_hash BLOB NOT NULL,
    entry_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
_INSERT: Final = f"INSERT INTO entries ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
#: Most entries waiting in memory for the disk; later events are dropped (and counted).
MAX_PENDING_ENTRIES: Final = 4096
#: Most bytes of entry data waiting in memory (plus ROW_OVERHEAD_BYTES per entry).
MAX_PENDING_BYTES: Final = 4 * 1024 * 1024
#: What one buffered row costs beyond its data (hashes, node id, numbers), for the bound.
ROW_OVERHEAD_BYTES: Final = 160
#: While writes fail, a failure is logged at most this often (seconds).
ERROR_LOG_INTERVAL_S: Final = 60.0
#: While writes fail, flush_due retries at most this often (seconds); flush always tries.
FLUSH_RETRY_INTERVAL_S: Final = 1.0
#: Type of the entry that records events dropped while the disk refused writes.
DROPPED_ENTRY_TYPE: Final = "journal.dropped"
#: Event types counted one by one in a ``journal.dropped`` entry (the rest as "other").
MAX_DROPPED_TYPES: Final = 32
#: Longest error text kept for ``status()``.
MAX_ERROR_CHARS: Final = 200


class JournalOwnerError(ConfigError):
    """The journal file belongs to another node (wrong data directory)."""


def _as_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):  # only if a reader did not set text_factory=bytes
        return value.encode("utf-8", "surrogatepass")
    raise DecodeError(f"{what} is {type(value).__name__}, not bytes")


def _as_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"{what} is {type(value).__name__}, not a number")
    try:
        result = float(value)
    except OverflowError:
        raise DecodeError(f"{what} out of range") from None
    if not math.isfinite(result):
        raise DecodeError(f"{what} is not finite")
    return result + 0.0


def _as_hash(value: object, what: str) -> bytes:
    raw = _as_bytes(value, what)
    if len(raw) != HASH_LEN:
        raise DecodeError(f"{what} is {len(raw)} bytes, not {HASH_LEN}")
    return raw


def _as_type_name(value: object) -> str:
    raw = _as_bytes(value, "type")
    if not 0 < len(raw) <= MAX_TYPE_BYTES:
        raise DecodeError(f"type is {len(raw)} bytes, must be 1..{MAX_TYPE_BYTES}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("type is not UTF-8") from None


def decode_row_untrusted(row: Sequence[object]) -> JournalEntry:
    """A stored ``entries`` row (columns :data:`ROW_COLUMNS`) as an entry; only DecodeError.

    Only the shape is checked here; whether the hashes are right is the verifier's job.
    """
    if not isinstance(row, Sequence) or len(row) != _ROW_LEN:
        raise DecodeError("journal row has the wrong number of columns")
    seq = row[0]
    if isinstance(seq, bool) or not isinstance(seq, int) or not FIRST_SEQ <= seq <= MAX_SEQ:
        raise DecodeError(f"seq {seq!r} is not an integer in {FIRST_SEQ}..{MAX_SEQ}")
    node_id = _as_bytes(row[3], "node_id")
    if not 0 < len(node_id) <= MAX_NODE_ID_BYTES:
        raise DecodeError(f"node_id is {len(node_id)} bytes, must be 1..{MAX_NODE_ID_BYTES}")
    return JournalEntry(
        seq=seq, mono_s=_as_float(row[1], "mono_s"), wall_s=_as_float(row[2], "wall_s"),
        node_id=node_id, type=_as_type_name(row[4]),
        data=decode_data_untrusted(_as_bytes(row[5], "data")),
        prev_hash=_as_hash(row[6], "prev_hash"), entry_hash=_as_hash(row[7], "entry_hash"),
    )


def iter_rows(conn: sqlite3.Connection, start_seq: int = 0) -> Iterator[tuple[object, ...]]:
    """Raw rows of ``entries`` with ``seq >= start_seq`` in seq order, in batches.

    Set ``conn.text_factory = bytes`` first so a TEXT column holding invalid UTF-8 is
    returned (and rejected by the decoder) instead of failing inside sqlite3.
    """
    cursor = conn.execute(
        f"SELECT {ROW_COLUMNS} FROM entries WHERE seq >= ? ORDER BY seq", (start_seq,))
    try:
        while batch := cursor.fetchmany(READ_BATCH_ROWS):
            yield from batch
    finally:
        cursor.close()


def _connect(path: Path) -> sqlite3.Connection:
    try:
        return open_durable(path, _SCHEMA)
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:
        raise DecodeError(f"{path}: not a journal database ({exc})") from None


def _load_head(conn: sqlite3.Connection, path: Path,
               node_id: bytes) -> tuple[int, bytes] | None:
    row = conn.execute(
        f"SELECT {ROW_COLUMNS} FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None:
        return None
    try:
        last = decode_row_untrusted(row)
    except DecodeError as exc:
        raise DecodeError(f"{path}: last journal entry unreadable, cannot continue the "
                          f"chain ({exc}); verify it and move it aside") from None
    if last.node_id != node_id:
        raise JournalOwnerError("journal", f"{path} belongs to node {last.node_id.hex()}, "
                                f"not {node_id.hex()}")
    return last.seq, last.entry_hash


def _claim_owner(conn: sqlite3.Connection, path: Path, node_id: bytes) -> None:
    rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    owner = rows.get(b"node_id")
    version = rows.get(b"format")
    if owner is not None and bytes(owner) != node_id:
        raise JournalOwnerError("journal", f"{path} belongs to node {bytes(owner).hex()}, "
                                f"not {node_id.hex()}")
    if version is not None and version != FORMAT_VERSION:
        raise ConfigError("journal", f"{path}: unsupported journal format {version!r}")
    if owner is None or version is None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('node_id', ?)",
                     (node_id,))
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('format', ?)",
                     (FORMAT_VERSION,))
        conn.execute("COMMIT")


class _Drops:
    """Events dropped since the last ``journal.dropped`` entry (buffer full)."""

    __slots__ = ("count", "first_mono_s", "first_wall_s", "last_mono_s", "last_wall_s",
                 "types")

    def __init__(self) -> None:
        self.count = 0
        self.first_mono_s = self.first_wall_s = self.last_mono_s = self.last_wall_s = 0.0
        self.types: dict[str, int] = {}

    def add(self, type_name: str, mono_s: float, wall_s: float) -> None:
        if self.count == 0:
            self.first_mono_s, self.first_wall_s = mono_s, wall_s
        self.count += 1
        self.last_mono_s, self.last_wall_s = mono_s, wall_s
        key = type_name if (type_name in self.types
                            or len(self.types) < MAX_DROPPED_TYPES - 1) else "other"
        self.types[key] = self.types.get(key, 0) + 1

    def data(self) -> dict[str, object]:
        return {"count": self.count, "first_mono_s": self.first_mono_s,
                "first_wall_s": self.first_wall_s, "last_mono_s": self.last_mono_s,
                "last_wall_s": self.last_wall_s, "types": dict(sorted(self.types.items())),
                "reason": "journal could not be written; buffer full"}


class JournalStore:
    """A node's journal in one SQLite file. Build with :meth:`open`; not thread-safe."""

    def __init__(self, conn: sqlite3.Connection, path: Path, chain: JournalChain) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._chain = chain
        head = chain.head
        self._durable_seq = 0 if head is None else head[0]
        self._pending: list[tuple[object, ...]] = []
        self._pending_bytes = 0
        self._drops = _Drops()
        #: Events dropped in all (buffer full), since open.
        self.dropped_total = 0
        #: Flushes that failed, since open.
        self.write_errors = 0
        #: Entries that could not be written when the journal was closed.
        self.lost_at_close = 0
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._last_error_log = 0.0
        self._retry_at = 0.0

    @classmethod
    def open(cls, path: Path, node_id: bytes) -> JournalStore:
        """Open (creating, mode 0600) the journal at ``path`` and resume its chain.

        Raises :class:`JournalOwnerError` if the file belongs to another node id and
        :class:`~meshcomm.errors.DecodeError` if it is not a journal or its last entry
        cannot be read (the chain cannot be continued from it).
        """
        if not isinstance(node_id, bytes) or not 0 < len(node_id) <= MAX_NODE_ID_BYTES:
            raise LocalProtocolError(f"node_id must be 1..{MAX_NODE_ID_BYTES} bytes")
        path = Path(path)
        conn = _connect(path)
        try:
            head = _load_head(conn, path, node_id)
            _claim_owner(conn, path, node_id)
        except BaseException:
            conn.close()
            raise
        log.debug("journal %s opened at seq %s", path, head[0] if head else 0)
        return cls(conn, path, JournalChain(node_id, head))

    @property
    def path(self) -> Path:
        return self._path

    @property
    def node_id(self) -> bytes:
        return self._chain.node_id

    @property
    def durable_seq(self) -> int:
        """Seq of the last entry committed to disk (0 if none)."""
        return self._durable_seq

    @property
    def pending_count(self) -> int:
        """Entries appended but not yet flushed."""
        return len(self._pending)

    @property
    def writable(self) -> bool:
        """False from a failed flush until a flush succeeds again."""
        return self._last_error is None

    def status(self) -> dict[str, object]:
        """For ``ctl status``: where the journal stands and whether the disk takes it."""
        head = self._chain.head
        return {"path": str(self._path), "durable_seq": self._durable_seq,
                "head_seq": head[0] if head is not None else 0,
                "writable": self.writable, "last_error": self._last_error,
                "pending": len(self._pending), "max_pending": MAX_PENDING_ENTRIES,
                "dropped": self.dropped_total, "write_errors": self.write_errors}

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LocalProtocolError(f"journal {self._path} is closed")
        return self._conn

    def _buffer_full(self) -> bool:
        return (len(self._pending) >= MAX_PENDING_ENTRIES
                or self._pending_bytes >= MAX_PENDING_BYTES)

    def append(self, type: JournalEventType | str, data: Mapping[str, object],
               mono_s: float, wall_s: float) -> JournalEntry | None:
        """Build the next entry and buffer it; it is written by the next :meth:`flush`.

        Returns None, and counts the event as dropped, when the buffer of unwritten
        entries is full (the disk has refused writes for a while)."""
        self._require_open()
        if self._buffer_full() and not self._make_room():
            self._drop(str(type), mono_s, wall_s)
            return None
        entry, data_bytes = self._chain.append_encoded(type, data, mono_s, wall_s)
        self._buffer(entry, data_bytes)
        return entry

    def append_record(self, record: JournalRecord, mono_s: float,
                      wall_s: float) -> JournalEntry | None:
        return self.append(record.type, record.data, mono_s, wall_s)

    def checkpoint(self, sign: Signer, mono_s: float, wall_s: float) -> JournalEntry | None:
        """Buffer a checkpoint signed by ``sign`` (e.g. ``Identity.sign``) over the head."""
        self._require_open()
        if self._buffer_full() and not self._make_room():
            self._drop(JournalEventType.CHECKPOINT.value, mono_s, wall_s)
            return None
        return self.append(JournalEventType.CHECKPOINT, self._chain.checkpoint_data(sign),
                           mono_s, wall_s)

    def _make_room(self) -> bool:
        """A full buffer on a disk that takes writes (many appends in one turn) is flushed
        now rather than dropped; while writes fail, retried at most per retry interval."""
        if self._last_error is not None and time.monotonic() < self._retry_at:
            return False
        try:
            self.flush()
        except sqlite3.Error:
            return False            # logged (rate-limited) and reported by _failed
        return not self._buffer_full()

    def _drop(self, type_name: str, mono_s: float, wall_s: float) -> None:
        if self._drops.count == 0:
            log.error("journal %s: %d entries wait for the disk; dropping new events until "
                      "it takes writes again (they are counted in a %s entry)",
                      self._path, len(self._pending), DROPPED_ENTRY_TYPE)
        self._drops.add(type_name, float(mono_s), float(wall_s))
        self.dropped_total += 1

    def _buffer(self, entry: JournalEntry, data_bytes: bytes) -> None:
        self._pending.append((entry.seq, entry.mono_s, entry.wall_s, entry.node_id,
                              entry.type, data_bytes, entry.prev_hash, entry.entry_hash))
        self._pending_bytes += len(data_bytes) + ROW_OVERHEAD_BYTES

    def flush_due(self) -> int:
        """:meth:`flush`, except that while writes fail it tries at most once per
        :data:`FLUSH_RETRY_INTERVAL_S` (what a runtime calls after every event)."""
        self._require_open()
        if self._last_error is not None and time.monotonic() < self._retry_at:
            return self._durable_seq
        return self.flush()

    def flush(self) -> int:
        """Commit all buffered entries in one durable transaction; return the durable seq.

        On an SQLite error the transaction is rolled back, the entries stay buffered for
        the next flush, and the error propagates.
        """
        conn = self._require_open()
        if not self._pending and not self._drops.count:
            return self._durable_seq
        try:
            self._commit(conn)
            if self._drops.count:       # the buffer is empty again: record what was lost
                self._record_drops()
                self._commit(conn)
        except sqlite3.Error as exc:
            self._failed(exc)
            raise
        self._recovered()
        return self._durable_seq

    def _commit(self, conn: sqlite3.Connection) -> None:
        if not self._pending:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, self._pending)
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        last_seq = self._pending[-1][0]
        assert isinstance(last_seq, int)
        self._durable_seq = last_seq
        self._pending.clear()
        self._pending_bytes = 0

    def _record_drops(self) -> None:
        drops, self._drops = self._drops, _Drops()
        entry, data_bytes = self._chain.append_encoded(
            DROPPED_ENTRY_TYPE, drops.data(), drops.last_mono_s, drops.last_wall_s)
        self._buffer(entry, data_bytes)
        log.warning("journal %s: %d event(s) were dropped while the disk refused writes; "
                    "recorded as entry %d", self._path, drops.count, entry.seq)

    def _failed(self, exc: sqlite3.Error) -> None:
        now = time.monotonic()
        self.write_errors += 1
        self._retry_at = now + FLUSH_RETRY_INTERVAL_S
        self._last_error = disk_problem(exc, self._path)[:MAX_ERROR_CHARS]
        if self._failing_since is None:
            self._failing_since = self._last_error_log = now
            log.error("journal %s cannot be written: %s; the node keeps running and holds "
                      "up to %d entries in memory", self._path, self._last_error,
                      MAX_PENDING_ENTRIES)
        elif now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.error("journal %s still cannot be written (%s) after %.0f s: %d entries "
                      "waiting, %d event(s) dropped", self._path, self._last_error,
                      now - self._failing_since, len(self._pending), self.dropped_total)

    def _recovered(self) -> None:
        if self._failing_since is None:
            return
        log.warning("journal %s is written again after %d failed attempt(s) over %.0f s",
                    self._path, self.write_errors, time.monotonic() - self._failing_since)
        self._failing_since = None
        self._last_error = None

    def entries(self, start_seq: int = 0) -> Iterator[JournalEntry]:
        """Flushed entries with ``seq >= start_seq`` in order; a bad row raises DecodeError."""
        conn = self._require_open()
        for row in iter_rows(conn, start_seq):
            yield decode_row_untrusted(row)

    def head(self) -> tuple[int, bytes] | None:
        """(seq, hash) of the newest entry appended, flushed or not; None when empty."""
        return self._chain.head

    def close(self) -> None:
        """Flush and close. Idempotent; the connection is closed even if the flush fails.

        A flush that fails here is logged in one line and counted in
        :attr:`lost_at_close` (entries plus dropped events); it does not raise."""
        conn = self._conn
        if conn is None:
            return
        try:
            self.flush()
        except sqlite3.Error as exc:
            self.lost_at_close = len(self._pending) + self._drops.count
            log.error("journal %s: %d entries could not be written at close: %s",
                      self._path, self.lost_at_close, disk_problem(exc, self._path))
        finally:
            self._conn = None
            conn.close()

    def __enter__(self) -> JournalStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
