"""SQLite persistence of trust records (an IO adapter: it may touch the disk).

The sans-IO :class:`~meshcomm.security.revocation.TrustStore` calls :meth:`TrustDb.persist`
for a record it is about to accept, *before* the record takes effect or is passed on (so
a revocation this node acknowledged or re-flooded survives a crash), and
:meth:`TrustDb.forget` for one it drops (its signer lost authority, or the bound evicted
it). On restart :meth:`TrustDb.load` hands the rows back; they are untrusted and go through
:meth:`TrustStore.restore`, which checks each like a record from the mesh.

One file per node (``trust.sqlite``), WAL mode with ``synchronous=FULL``. Table ``trust``:
record id and the record's bytes (``[signed envelope, signature]``). At most
:data:`~meshcomm.security.revocation.MAX_TRUST_RECORDS` rows are read back.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Final

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.security.revocation import (
    MAX_TRUST_RECORDS,
    TrustRecord,
    TrustStore,
    decode_trust_record_untrusted,
)
from meshcomm.security.verify import SignatureVerifier
from meshcomm.sqlitefile import open_store

log = logging.getLogger(__name__)

TRUST_FILE: Final = "trust.sqlite"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS trust (
    record_id BLOB PRIMARY KEY,
    data BLOB NOT NULL
);
"""
MAX_LOGGED_ROWS: Final = 10


class TrustDb:
    """The trust-record database of one node. Use from one thread."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        self.skipped_rows = 0
        #: writes that failed (the record was then refused, see TrustStore.offer)
        self.write_errors = 0

    @classmethod
    def open(cls, path: str | Path) -> TrustDb:
        """Open or create the database (mode 0600). ConfigError if it is not one;
        sqlite3.OperationalError or OSError when the disk refuses."""
        p = Path(path)
        conn = open_store(p, _SCHEMA, "trust", "a trust database")
        return cls(conn, p)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LocalProtocolError("trust store is closed")
        return self._conn

    def persist(self, record: TrustRecord) -> bool:
        """Write ``record`` durably (committed with a full sync); False if it failed."""
        try:
            self._db().execute("INSERT OR IGNORE INTO trust (record_id, data) VALUES (?, ?)",
                               (record.record_id, record.to_bytes()))
        except (sqlite3.Error, OSError) as exc:
            self.write_errors += 1
            log.warning("%s: trust record not written: %s", self.path, exc)
            return False
        return True

    def forget(self, record_id: bytes) -> None:
        try:
            self._db().execute("DELETE FROM trust WHERE record_id = ?", (record_id,))
        except (sqlite3.Error, OSError) as exc:
            log.warning("%s: trust record not removed: %s", self.path, exc)

    def load(self) -> list[TrustRecord]:
        """The stored records that decode (corrupt rows skipped and counted)."""
        self.skipped_rows = 0
        out: list[TrustRecord] = []
        rows = self._db().execute("SELECT record_id, data FROM trust ORDER BY rowid LIMIT ?",
                                  (MAX_TRUST_RECORDS,))
        for rid, data in rows:
            try:
                if not isinstance(data, bytes):
                    raise DecodeError("trust row is not a blob")
                record = decode_trust_record_untrusted(data)
                if record.record_id != rid:
                    raise DecodeError("trust row id does not match its record")
            except DecodeError as exc:
                self.skipped_rows += 1
                if self.skipped_rows <= MAX_LOGGED_ROWS:
                    log.warning("%s: skipped a corrupt row: %s", self.path, exc)
                continue
            out.append(record)
        return out

    def count(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM trust").fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_trust_store(path: Path, incident: str, roots: frozenset[bytes],
                     verifier: SignatureVerifier) -> tuple[TrustDb, TrustStore]:
    """Open the node's trust database and the store restored from it (each row checked
    again as if it came from the mesh: a record of another incident or trust root, or
    whose signer lost authority, is not restored)."""
    db = TrustDb.open(path)
    try:
        store = TrustStore(incident, roots, verifier, persist=db.persist, forget=db.forget)
        rows = db.load()
        kept = store.restore(rows)
    except BaseException:
        db.close()
        raise
    if rows or db.skipped_rows:
        log.info("trust: restored %d of %d record(s)%s", kept, len(rows),
                 f", {db.skipped_rows} corrupt row(s) skipped" if db.skipped_rows else "")
    return db, store
