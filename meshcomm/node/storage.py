"""SQLite persistence of store-and-forward state (an IO adapter: it may touch the disk).

The sans-IO core (:mod:`meshcomm.node.storeforward`) emits :class:`SfPersist` events; the
runtime applies each to :meth:`SfStorage.apply` and, on restart, passes what
:meth:`SfStorage.load` returns back to the core's constructor.

One file per node, WAL mode with ``synchronous=FULL``: an applied event is on disk when
:meth:`SfStorage.apply` returns. Tables: ``held`` (a held message: the origin's signed
parcel, own/custody, status), ``delivered`` (ids this node delivered to its client, the
exactly-once set: id, wall-clock time, origin node) and ``meta`` (format version). A file
of the first format gains the ``origin`` column when opened.

Rows read back are untrusted (the file may have been damaged or edited):
:func:`decode_held_row_untrusted` and :func:`decode_delivered_row_untrusted` raise only
DecodeError, and :meth:`SfStorage.load` reports and skips a row that does not decode, or
whose parcel signature does not check out, instead of failing.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from meshcomm.errors import ConfigError, DecodeError, LocalProtocolError
from meshcomm.node.sf_delivered import DeliveredRecord
from meshcomm.node.storeforward import HeldMessage, HeldState, HeldStatus, PersistOp, SfPersist
from meshcomm.node.storeforward_wire import (
    check_msg_id,
    decode_parcel_untrusted,
    parcel_signature_ok,
)
from meshcomm.sqlitefile import open_store
from meshcomm.wire import limits

log = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1
#: Longest holder label stored (an AoR or a node's hex name).
MAX_HOLDER_BYTES: Final = limits.MAX_AOR_LEN
#: Longest state name stored.
MAX_STATE_BYTES: Final = 16
#: Reasons of skipped rows kept for the caller (the count is kept in full).
MAX_REPORTED_ROWS: Final = 100
#: Longest origin (a node id) stored with a delivered id.
MAX_ORIGIN_BYTES: Final = 32
DELIVERED_COLUMNS: Final = "msg_id, wall_s, origin"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS held (
    msg_id BLOB PRIMARY KEY,
    parcel BLOB NOT NULL,
    signature BLOB NOT NULL,
    own INTEGER NOT NULL,
    state TEXT NOT NULL,
    holder TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (msg_id BLOB PRIMARY KEY, wall_s REAL NOT NULL,
                                      origin BLOB NOT NULL DEFAULT x'');
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
HELD_COLUMNS: Final = "msg_id, parcel, signature, own, state, holder"
_HELD_ROW_LEN: Final = 6
#: An update keeps the row (and so the order in which messages were first held).
_UPSERT_HELD: Final = (
    f"INSERT INTO held ({HELD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (msg_id) DO "
    "UPDATE SET parcel = excluded.parcel, signature = excluded.signature, own = excluded.own, "
    "state = excluded.state, holder = excluded.holder")


def _text(value: object, what: str, max_bytes: int) -> str:
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, bytes):
        raw = value
    else:
        raise DecodeError(f"{what} is {type(value).__name__}, not text")
    if len(raw) > max_bytes:
        raise DecodeError(f"{what} longer than {max_bytes} bytes", reason="oversized")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{what} is not UTF-8") from None


def _blob(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(f"{what} is {type(value).__name__}, not bytes")
    return value


def decode_held_row_untrusted(row: Sequence[object]) -> HeldMessage:
    """A ``held`` row (columns :data:`HELD_COLUMNS`) as a HeldMessage; only DecodeError.

    The parcel's signature is checked too: a stored copy must still be the origin's."""
    if len(row) != _HELD_ROW_LEN:
        raise DecodeError("held row has the wrong number of columns")
    msg_id = check_msg_id(_blob(row[0], "msg_id"), "msg_id")
    parcel = decode_parcel_untrusted(_blob(row[1], "parcel"), _blob(row[2], "signature"))
    if parcel.msg_id != msg_id:
        raise DecodeError("msg_id column differs from the parcel's")
    if not parcel_signature_ok(parcel):
        raise DecodeError("parcel signature does not check out", reason="bad_signature")
    own = row[3]
    if own not in (0, 1) or isinstance(own, float):
        raise DecodeError(f"own is {own!r}, not 0 or 1")
    try:
        state = HeldState(_text(row[4], "state", MAX_STATE_BYTES))
    except ValueError:
        raise DecodeError("unknown state") from None
    holder = _text(row[5], "holder", MAX_HOLDER_BYTES)
    return HeldMessage(parcel, bool(own), state, holder)


def decode_delivered_row_untrusted(row: Sequence[object]) -> bytes:
    if len(row) != 1:
        raise DecodeError("delivered row has the wrong number of columns")
    return check_msg_id(_blob(row[0], "msg_id"), "msg_id")


def decode_delivered_record_untrusted(row: Sequence[object]) -> DeliveredRecord:
    """A ``delivered`` row (columns :data:`DELIVERED_COLUMNS`); only DecodeError."""
    if len(row) != 3:
        raise DecodeError("delivered row has the wrong number of columns")
    msg_id = check_msg_id(_blob(row[0], "msg_id"), "msg_id")
    wall_s = row[1]
    if isinstance(wall_s, bool) or not isinstance(wall_s, int | float) or wall_s != wall_s:
        raise DecodeError("delivered wall_s is not a number")
    origin = _blob(row[2], "origin")
    if len(origin) > MAX_ORIGIN_BYTES:
        raise DecodeError("delivered origin too long", reason="oversized")
    return DeliveredRecord(msg_id, float(wall_s), origin)


class SfStorage:
    """The store-and-forward database of one node. Use from one thread."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        #: Rows skipped by the last load: how many, and why (the first MAX_REPORTED_ROWS).
        self.skipped_rows = 0
        self.skipped_reasons: list[str] = []

    @classmethod
    def open(cls, path: str | Path) -> SfStorage:
        """Open or create the database (mode 0600). ConfigError if it is not one of ours."""
        p = Path(path)
        conn = open_store(p, _SCHEMA, "store_forward", "a store-and-forward database")
        try:
            cls._check_format(conn, p)
        except BaseException:
            conn.close()
            raise
        return cls(conn, p)

    @staticmethod
    def _check_format(conn: sqlite3.Connection, path: Path) -> None:
        row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('format', ?)",
                         (FORMAT_VERSION,))
        elif row[0] != FORMAT_VERSION:
            raise ConfigError("store_forward", f"{path}: unsupported format {row[0]!r}")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(delivered)")}
        if b"origin" not in columns and "origin" not in columns:
            conn.execute("ALTER TABLE delivered ADD COLUMN origin BLOB NOT NULL DEFAULT x''")

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LocalProtocolError("store-and-forward storage is closed")
        return self._conn

    # ------------------------------------------------------------ writing
    def apply(self, event: SfPersist) -> None:
        """Apply one event durably (one transaction)."""
        self.apply_all((event,))

    def apply_all(self, events: Iterable[SfPersist]) -> None:
        """Apply events in order, all in one transaction: all are on disk when it returns,
        or none (sqlite3.Error: disk full, read-only...) and the connection is usable
        again, so writes resume when the disk does."""
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                self._apply_one(conn, event)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _apply_one(conn: sqlite3.Connection, event: SfPersist) -> None:
        if event.op is PersistOp.STORE:
            held = event.held
            if held is None or held.msg_id != event.msg_id:
                raise LocalProtocolError("STORE needs the held message of msg_id")
            p = held.parcel
            conn.execute(_UPSERT_HELD, (p.msg_id, p.signed, p.signature, int(held.own),
                                        held.state.value, held.holder))
        elif event.op is PersistOp.REMOVE:
            conn.execute("DELETE FROM held WHERE msg_id = ?", (event.msg_id,))
        elif event.op is PersistOp.DELIVERED:
            conn.execute(f"INSERT OR REPLACE INTO delivered ({DELIVERED_COLUMNS}) "
                         "VALUES (?, ?, ?)", (event.msg_id, event.wall_s, event.origin))
        else:
            conn.execute("DELETE FROM delivered WHERE msg_id = ?", (event.msg_id,))

    # ------------------------------------------------------------ reading
    def load(self) -> tuple[list[HeldMessage], list[bytes], list[HeldStatus]]:
        """(held messages, delivered ids, statuses of this node's own messages).

        A row that does not decode is logged, counted in ``skipped_rows`` and skipped."""
        conn = self._db()
        self.skipped_rows = 0
        self.skipped_reasons = []
        held: list[HeldMessage] = []
        for row in conn.execute(f"SELECT {HELD_COLUMNS} FROM held ORDER BY rowid"):
            try:
                held.append(decode_held_row_untrusted(row))
            except DecodeError as exc:
                self._skip("held", exc)
        delivered: list[bytes] = []
        for row in conn.execute("SELECT msg_id FROM delivered ORDER BY rowid"):
            try:
                delivered.append(decode_delivered_row_untrusted(row))
            except DecodeError as exc:
                self._skip("delivered", exc)
        statuses = sorted((h.status() for h in held if h.own),
                          key=lambda s: (s.created, s.msg_id))
        return held, delivered, statuses

    def load_delivered(self) -> list[DeliveredRecord]:
        """The exactly-once log with times and origins (a row that does not decode is
        skipped as in :meth:`load`)."""
        out: list[DeliveredRecord] = []
        for row in self._db().execute(f"SELECT {DELIVERED_COLUMNS} FROM delivered "
                                      "ORDER BY rowid"):
            try:
                out.append(decode_delivered_record_untrusted(row))
            except DecodeError as exc:
                self._skip("delivered", exc)
        return out

    def _skip(self, table: str, exc: DecodeError) -> None:
        self.skipped_rows += 1
        if len(self.skipped_reasons) < MAX_REPORTED_ROWS:
            self.skipped_reasons.append(f"{table}: {exc}")
        log.warning("%s: skipped a corrupt %s row: %s", self.path, table, exc)

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> SfStorage:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
