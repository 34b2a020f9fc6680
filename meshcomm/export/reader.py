"""Journals for an export (an IO adapter: journal files opened read-only).

A path given to ``meshcomm export`` is a node's data directory (its ``journal.sqlite``,
and its ``identity.key`` when present, whose public key checks the journal's signed
checkpoints) or a journal file copied off a device. Each is verified
(:func:`meshcomm.journal.verify.verify_journal`) before anything of it is merged, and read
again as a stream of entries (rows that do not decode are skipped here: the verification
named them).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from meshcomm.errors import DecodeError, MeshcommError
from meshcomm.journal.chain import JournalEntry
from meshcomm.journal.store import decode_row_untrusted, iter_rows
from meshcomm.journal.verify import (
    VerifyReport,
    journal_owner,
    readable_journal,
    verify_journal,
)
from meshcomm.security.keystore import IDENTITY_FILE, read_key_file

#: The journal file in a node's data directory (meshcomm.runtime.app.JOURNAL_FILE).
JOURNAL_FILE: Final = "journal.sqlite"


class ExportInputError(MeshcommError):
    """A path given to the export is neither a data directory with a journal nor a
    journal file."""


@dataclass(frozen=True, slots=True)
class Source:
    """One journal: where it is, whose it says it is, and its verification."""

    path: Path
    device: bytes | None
    public_key: bytes | None
    report: VerifyReport

    @property
    def device_hex(self) -> str:
        return self.device.hex() if self.device is not None else f"unknown:{self.path}"


def journal_paths(paths: Iterable[Path]) -> list[Path]:
    """The journal file of each given data directory or file (ExportInputError names the
    first path that is neither)."""
    found = []
    for path in paths:
        candidate = path / JOURNAL_FILE if path.is_dir() else path
        if not candidate.is_file():
            raise ExportInputError(f"{path}: no journal here (a data directory with "
                                   f"{JOURNAL_FILE}, or a journal file)")
        found.append(candidate)
    return found


def open_source(path: Path) -> Source:
    """Verify the journal at ``path`` (with the key of its data directory when there is
    one whose node id matches the journal's owner)."""
    device = journal_owner(path)
    public_key = None
    key_file = path.parent / IDENTITY_FILE
    if device is not None and key_file.is_file():
        try:
            identity = read_key_file(key_file)
        except (OSError, MeshcommError):
            identity = None
        if identity is not None and identity.node_id == device:
            public_key = identity.public_key
    return Source(path, device, public_key, verify_journal(path, public_key))


def entries(path: Path) -> Iterator[JournalEntry]:
    """The decodable entries of the journal at ``path`` in seq order, streamed."""
    with readable_journal(path) as readable:
        conn = sqlite3.connect(readable.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            conn.text_factory = bytes
            for row in iter_rows(conn):
                try:
                    yield decode_row_untrusted(row)
                except DecodeError:
                    continue
        finally:
            conn.close()
