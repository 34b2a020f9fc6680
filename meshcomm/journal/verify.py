"""Verify a node journal file: the IO adapter around the sans-IO verifier of
:mod:`.audit` (what it finds: edited, removed, reordered, undecodable entries and bad
checkpoints; see there).

This module opens the SQLite file read-only (from a temporary copy when a -wal file cannot
be read in place, see :func:`readable_journal`), streams its rows to the verifier in two
passes and answers which node a file names as its owner. The verifier's types and
:func:`verify_entries` are re-exported, so callers need only this module.

``meshcomm journal verify FILE...`` (and ``python -m meshcomm.journal.verify FILE...``,
the same command) prints a verdict per file: see :mod:`meshcomm.cli.journal_cmd`.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.journal.audit import (
    DATABASE_ERROR_PREFIX,
    Problem,
    ProblemKind,
    StreamVerifier,
    UndecodableRow,
    VerifyReport,
    verify_entries,
    verify_stream,
)
from meshcomm.journal.chain import JournalEntry
from meshcomm.journal.codec import MAX_NODE_ID_BYTES
from meshcomm.journal.store import decode_row_untrusted, iter_rows

__all__ = [
    "DATABASE_ERROR_PREFIX",
    "Problem",
    "ProblemKind",
    "StreamVerifier",
    "UndecodableRow",
    "VerifyReport",
    "journal_owner",
    "readable_journal",
    "verify_connection",
    "verify_entries",
    "verify_journal",
]

#: SQLite's result code for a file it cannot open (e.g. no -shm on read-only media).
SQLITE_CANTOPEN: Final = 14


def _hash_index(conn: sqlite3.Connection) -> dict[bytes, int]:
    """First pass: entry hash -> seq of every row that decodes (what verify_entries would
    index from a list), without keeping the entries."""
    index: dict[bytes, int] = {}
    try:
        for row in iter_rows(conn):
            try:
                entry = decode_row_untrusted(row)
            except DecodeError:
                continue
            index[entry.entry_hash] = entry.seq
    except sqlite3.Error:
        pass                    # the second pass reports the database error
    return index


def _read_items(conn: sqlite3.Connection) -> Iterator[JournalEntry | UndecodableRow]:
    last_seq = 0
    try:
        for row in iter_rows(conn):
            seq = row[0] if type(row[0]) is int else last_seq + 1
            last_seq = seq
            try:
                yield decode_row_untrusted(row)
            except DecodeError as exc:
                yield UndecodableRow(seq, f"entry {seq} cannot be decoded (edited or "
                                          f"damaged): {exc}")
    except sqlite3.Error as exc:
        yield UndecodableRow(last_seq + 1, f"{DATABASE_ERROR_PREFIX}{exc}", database=True)


def verify_journal(path: Path, public_key: bytes | None = None, *,
                   expected_head: tuple[int, bytes] | None = None) -> VerifyReport:
    """Verify the journal file at ``path`` (opened read-only; tampered rows are reported)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no journal at {path}")
    with readable_journal(path) as readable:
        return _verify_file(readable, public_key, expected_head)


@contextlib.contextmanager
def readable_journal(path: Path) -> Iterator[Path]:
    """``path``, or a temporary copy of it and its -wal file when SQLite cannot read it
    in place (see :func:`_needs_writable_copy`); the copy is removed afterwards."""
    path = Path(path)
    if not _needs_writable_copy(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="meshcomm-verify-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(_wal_of(path), _wal_of(copy))
        yield copy


def _verify_file(path: Path, public_key: bytes | None,
                 expected_head: tuple[int, bytes] | None) -> VerifyReport:
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        conn.text_factory = bytes
        return verify_connection(conn, public_key, expected_head=expected_head)
    finally:
        conn.close()


def verify_connection(conn: sqlite3.Connection, public_key: bytes | None = None, *,
                      expected_head: tuple[int, bytes] | None = None) -> VerifyReport:
    """Verify the journal open on ``conn`` (``text_factory = bytes``; e.g. inside a read
    transaction the caller holds, so both passes see the same rows)."""
    return verify_stream(_read_items(conn), _hash_index(conn), public_key, expected_head)


def _wal_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _needs_writable_copy(path: Path) -> bool:
    """True for a journal left with a -wal file (a node that did not close it) in a place
    SQLite cannot create its -shm file (read-only media): it is verified from a copy,
    so the entries still in the -wal file are read too."""
    if not path.is_file() or not _wal_of(path).is_file():
        return False
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        return getattr(exc, "sqlite_errorcode", None) == SQLITE_CANTOPEN
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return False


def journal_owner(path: Path) -> bytes | None:
    """The node id a journal file names as its owner (``meta``, else its first entry);
    None when the file does not say (or cannot be read). Untrusted: only a hint for
    choosing the key to check checkpoints with."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        conn.text_factory = bytes
        row = conn.execute("SELECT value FROM meta WHERE key = 'node_id'").fetchone()
        if row is None:
            row = conn.execute("SELECT node_id FROM entries ORDER BY seq LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    value = row[0] if row is not None else None
    return value if isinstance(value, bytes) and 0 < len(value) <= MAX_NODE_ID_BYTES else None


if __name__ == "__main__":      # python -m meshcomm.journal.verify FILE...: the CLI command
    import sys

    from meshcomm.cli.journal_cmd import verify_main

    sys.exit(verify_main(prog="python -m meshcomm.journal.verify"))
