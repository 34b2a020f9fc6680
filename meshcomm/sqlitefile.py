"""Durable private SQLite files (an IO adapter shared by the journal and the
store-and-forward storage): created mode 0600, WAL journal, ``synchronous=FULL`` (a commit
is on disk when it returns), ``secure_delete`` (freed content zeroed), bytes for TEXT so
hand-edited rows cannot break decoding."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final

from meshcomm.errors import ConfigError

PRIVATE_FILE_MODE: Final = 0o600


class WalRefused(OSError):
    """SQLite would not switch the file to WAL mode (e.g. an unsupported file system)."""


def create_private_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def open_durable(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating) ``path`` and apply ``schema`` in one transaction.

    Raises sqlite3.DatabaseError for a file that is not a database (callers turn it into
    their own error), WalRefused, or OSError; the connection is closed on any failure."""
    create_private_file(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.text_factory = bytes
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or bytes(mode[0]).lower() != b"wal":
            raise WalRefused(f"{path}: SQLite refused WAL mode")
        conn.execute("PRAGMA synchronous=FULL")
        # Freed content is overwritten with zeros: a held MESSAGE sealed in place, a
        # parcel delivered, a row deleted leave no readable copy in the file's free pages.
        conn.execute("PRAGMA secure_delete=ON")
        conn.executescript(f"BEGIN IMMEDIATE; {schema} COMMIT;")
    except BaseException:
        conn.close()
        raise
    return conn


def open_store(path: Path, schema: str, section: str, what: str) -> sqlite3.Connection:
    """:func:`open_durable` for one of the node's stores: a file that refuses WAL mode or
    is no database is a ConfigError of ``section`` naming it as not ``what``;
    sqlite3.OperationalError and OSError (the disk refused) pass through."""
    try:
        return open_durable(path, schema)
    except WalRefused as exc:
        raise ConfigError(section, str(exc)) from None
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:
        raise ConfigError(section, f"{path}: not {what} ({exc})") from None
