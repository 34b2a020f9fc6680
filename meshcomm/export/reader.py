"""Journals for an export (an IO adapter: journal files opened read-only).

A path given to ``meshcomm export`` is one of:

* a node's data directory: its ``journal.sqlite``, and its ``identity.key`` when present
  (the public key checks the journal's signed checkpoints);
* a device directory of a ``ctl collect`` output: ``journal.sqlite`` and ``public.key``
  (the device's Ed25519 public key as 64 hex digits and a newline);
* a collection directory (a ``ctl collect --out`` directory): no journal of its own, but
  subdirectories that each hold one; every one of them is taken, in name order;
* a journal file copied off a device (a ``public.key`` or ``identity.key`` beside it is
  used as above).

A key is used only when its node id is the one the journal names as its owner.

:class:`Snapshot` reads one journal inside one read transaction, so every pass of the
export (verification, then the merge) sees the same rows even when the node that owns
the journal is still appending to it. Rows come as stored; the export decodes them
(:mod:`meshcomm.export.rows`).
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from meshcomm.errors import DecodeError, MeshcommError
from meshcomm.export.rows import decode_light, decode_row, decode_seen_row
from meshcomm.export.timeline import Light
from meshcomm.journal.chain import JournalEntry
from meshcomm.journal.codec import MAX_SEQ
from meshcomm.journal.store import ROW_COLUMNS
from meshcomm.journal.verify import (
    DATABASE_ERROR_PREFIX,
    StreamVerifier,
    UndecodableRow,
    VerifyReport,
    journal_owner,
    readable_journal,
    verify_connection,
    verify_journal,
)
from meshcomm.security.identity import node_id_of
from meshcomm.security.keystore import IDENTITY_FILE, read_key_file
from meshcomm.types import PUBLIC_KEY_LEN

#: The journal file in a node's data directory (meshcomm.runtime.app.JOURNAL_FILE).
JOURNAL_FILE: Final = "journal.sqlite"
#: A collected device's public key (``ctl collect``): 64 hex digits and a newline.
PUBLIC_KEY_FILE: Final = "public.key"
#: Largest public.key file read (64 hex digits, a newline, maybe a CR).
MAX_PUBLIC_KEY_FILE_BYTES: Final = 80
#: A collected copy's record of when it was taken (meshcomm.runtime.collect_edge).
COPY_INFO_FILE: Final = "copy.json"
#: Largest copy.json read.
MAX_COPY_INFO_BYTES: Final = 4096
#: Most journals one collection directory may expand to.
MAX_COLLECTED_DEVICES: Final = 10_000
#: SQLite page cache of each open journal (KiB): the export reads each one front to back
#: with up to one connection per device open at once, so a large cache buys nothing.
READ_CACHE_KIB: Final = 128
#: Rows fetched from SQLite per call while one journal is read alone (verification).
FETCH_ROWS: Final = 1024
#: A long journal's verification reports progress every this many rows.
SCAN_PROGRESS_ROWS: Final = 65_536
#: Rows fetched per call while every journal is read at once (the merge holds one batch
#: per device: this times the devices times a row's size is its memory).
MERGE_FETCH_ROWS: Final = 32


class ExportInputError(MeshcommError):
    """A path given to the export is neither a data directory with a journal, a
    collection directory, nor a journal file."""


@dataclass(frozen=True, slots=True)
class JournalFile:
    """One journal to export: where it is, whose it says it is, the key for its
    checkpoints (None: checkpoints are checked for their link only)."""

    path: Path
    device: bytes | None
    public_key: bytes | None

    @property
    def device_hex(self) -> str:
        return self.device.hex() if self.device is not None else f"unknown:{self.path}"


@dataclass(frozen=True, slots=True)
class Source:
    """One journal and its verification."""

    path: Path
    device: bytes | None
    public_key: bytes | None
    report: VerifyReport

    @property
    def device_hex(self) -> str:
        return self.device.hex() if self.device is not None else f"unknown:{self.path}"


def journal_paths(paths: Iterable[Path]) -> list[Path]:
    """The journal file of each given path (a collection directory gives one per device
    directory in it); ExportInputError names the first path that holds no journal."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir() and not (path / JOURNAL_FILE).is_file():
            found.extend(_collected(path))
            continue
        candidate = path / JOURNAL_FILE if path.is_dir() else path
        if not candidate.is_file():
            raise ExportInputError(f"{path}: no journal here (a data directory with "
                                   f"{JOURNAL_FILE}, a collection directory, or a "
                                   "journal file)")
        found.append(candidate)
    return found


def _collected(directory: Path) -> list[Path]:
    """The journals of a collection directory's device directories, in name order."""
    try:
        subdirs = sorted(p for p in directory.iterdir() if p.is_dir())
    except OSError as exc:
        raise ExportInputError(f"{directory}: {exc.strerror or exc}") from None
    journals = [d / JOURNAL_FILE for d in subdirs if (d / JOURNAL_FILE).is_file()]
    if not journals:
        raise ExportInputError(f"{directory}: no journal here (a data directory with "
                               f"{JOURNAL_FILE}, a collection directory whose "
                               "subdirectories hold one, or a journal file)")
    if len(journals) > MAX_COLLECTED_DEVICES:
        raise ExportInputError(f"{directory}: {len(journals)} device directories, at most "
                               f"{MAX_COLLECTED_DEVICES}")
    return journals


def read_copy_info(journal: Path) -> tuple[str, float, int] | None:
    """(collector node id hex, its wall clock when it last heard the device, the head the
    device reported then) from the ``copy.json`` beside a collected journal; None when
    missing, unreadable, oversized or not in that form (the copy is judged as a plain
    file then)."""
    try:
        with (journal.parent / COPY_INFO_FILE).open("rb") as handle:
            raw = handle.read(MAX_COPY_INFO_BYTES + 1)
        info = json.loads(raw) if len(raw) <= MAX_COPY_INFO_BYTES else None
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    collector, heard, head = info.get("collector"), info.get("heard_wall_s"), info.get("head_seq")
    if (not isinstance(collector, str) or len(collector) != 64
            or any(c not in "0123456789abcdef" for c in collector)
            or isinstance(heard, bool) or not isinstance(heard, int | float)
            or not math.isfinite(heard) or isinstance(head, bool) or not isinstance(head, int)
            or not 0 <= head < 2**63):
        return None
    return collector, float(heard), head


def read_public_key_file(path: Path) -> bytes | None:
    """The key in a ``public.key`` file (64 hex digits, a newline), None when the file
    is missing, unreadable or not in that form."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PUBLIC_KEY_FILE_BYTES + 1)
    except OSError:
        return None
    text = raw.strip()
    if len(raw) > MAX_PUBLIC_KEY_FILE_BYTES or len(text) != 2 * PUBLIC_KEY_LEN:
        return None
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


def _key_beside(path: Path, device: bytes) -> bytes | None:
    """The public key next to the journal whose node id is ``device``: the data
    directory's identity, else a collected ``public.key``."""
    key_file = path.parent / IDENTITY_FILE
    if key_file.is_file():
        try:
            identity = read_key_file(key_file)
        except (OSError, MeshcommError):
            identity = None
        if identity is not None and identity.node_id == device:
            return bytes(identity.public_key)
    public = read_public_key_file(path.parent / PUBLIC_KEY_FILE)
    if public is not None and bytes(node_id_of(public)) == device:
        return public
    return None


def journal_file(path: Path) -> JournalFile:
    """Whose the journal at ``path`` says it is, and the key to check it with."""
    device = journal_owner(path)
    public_key = _key_beside(path, device) if device is not None else None
    return JournalFile(path, device, public_key)


def open_source(path: Path) -> Source:
    """Verify the journal at ``path`` on its own (with the key beside it, see
    :func:`journal_file`)."""
    found = journal_file(path)
    return Source(path, found.device, found.public_key,
                  verify_journal(path, found.public_key))


class Snapshot:
    """One journal file read inside one read transaction (a context manager): each call
    of :meth:`rows` sees the same rows, whatever is appended meanwhile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stack = contextlib.ExitStack()
        self._conn: sqlite3.Connection | None = None
        #: why the file could not be opened as a journal (None: it could)
        self.error: str | None = None
        #: :meth:`scan` found every row stored canonically (so the merge decodes faster)
        self.canonical = False
        try:
            readable = self._stack.enter_context(readable_journal(path))
            conn = sqlite3.connect(readable.resolve().as_uri() + "?mode=ro", uri=True,
                                   isolation_level=None)
            self._stack.callback(conn.close)
            conn.text_factory = bytes
            conn.execute(f"PRAGMA cache_size = -{READ_CACHE_KIB}")
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            self._conn = conn
        except (sqlite3.Error, OSError) as exc:
            self._stack.close()
            self.error = str(exc)
        except BaseException:
            self._stack.close()
            raise

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def rows(self, last_seq: int = MAX_SEQ,
             batch: int = FETCH_ROWS) -> Iterator[tuple[object, ...]]:
        """The stored rows in seq order (up to ``last_seq``), fetched ``batch`` at a
        time; sqlite3.Error for a database that cannot be read."""
        if self._conn is None:
            raise sqlite3.OperationalError(self.error or "not open")
        cursor = self._conn.execute(
            f"SELECT {ROW_COLUMNS} FROM entries WHERE seq <= ? ORDER BY seq", (last_seq,))
        try:
            while rows := cursor.fetchmany(batch):
                yield from rows
        finally:
            cursor.close()

    def entries(self, last_seq: int = MAX_SEQ,
                batch: int = MERGE_FETCH_ROWS) -> Iterator[JournalEntry]:
        """The decodable entries in seq order (rows that do not decode are skipped: the
        verification named them); a database error ends the stream."""
        try:
            for row in self.rows(last_seq, batch):
                try:
                    yield decode_row(row)[0]
                except DecodeError:
                    continue
        except sqlite3.Error:
            return

    def light_entries(self, last_seq: int = MAX_SEQ,
                      batch: int = MERGE_FETCH_ROWS) -> Iterator[Light]:
        """:meth:`entries` as the merge needs them (:data:`.timeline.Light`), decoded
        the short way when :meth:`scan` found every row canonical."""
        decode = decode_seen_row if self.canonical else decode_light
        try:
            for row in self.rows(last_seq, batch):
                try:
                    yield decode(row)
                except DecodeError:
                    continue
        except sqlite3.Error:
            return

    def scan(self, public_key: bytes | None,
             sink: Callable[[JournalEntry], None] | None = None,
             progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Verify the journal in one pass, handing each decodable entry to ``sink`` as it
        goes (the export pairs sends and receipts meanwhile) and the number of rows read
        to ``progress`` every :data:`SCAN_PROGRESS_ROWS`. A journal with a problem is
        verified again with :meth:`verify_exactly`, whose report names every problem the
        way ``meshcomm journal verify`` does."""
        verifier = StreamVerifier(public_key)
        last_seq = read = 0
        all_canonical = True
        try:
            for row in self.rows():
                seq = row[0] if type(row[0]) is int else last_seq + 1
                last_seq = seq
                read += 1
                if progress is not None and read % SCAN_PROGRESS_ROWS == 0:
                    progress(read)
                try:
                    entry, canonical = decode_row(row)
                except DecodeError as exc:
                    all_canonical = False
                    verifier.feed(UndecodableRow(seq, f"entry {seq} cannot be decoded "
                                                      f"(edited or damaged): {exc}"))
                    continue
                all_canonical = all_canonical and canonical is not None
                verifier.feed(entry, canonical)
                if sink is not None:
                    sink(entry)
        except sqlite3.Error as exc:
            all_canonical = False
            verifier.feed(UndecodableRow(last_seq + 1, f"{DATABASE_ERROR_PREFIX}{exc}",
                                         database=True))
        report = verifier.report()
        self.canonical = all_canonical
        return report if report.ok else self.verify_exactly(public_key)

    def verify_exactly(self, public_key: bytes | None) -> VerifyReport:
        """The full two-pass verification of this snapshot (it names every problem)."""
        if self._conn is None:
            verifier = StreamVerifier(public_key)
            verifier.feed(UndecodableRow(1, f"{DATABASE_ERROR_PREFIX}{self.error}",
                                         database=True))
            return verifier.report()
        return verify_connection(self._conn, public_key)


def entries(path: Path) -> Iterator[JournalEntry]:
    """The decodable entries of the journal at ``path`` in seq order, streamed."""
    with Snapshot(path) as snapshot:
        yield from snapshot.entries()
