"""trust.sqlite: round trip, corrupt rows, a full disk, replays after a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from meshcomm.errors import ConfigError
from meshcomm.node.revocation_store import TRUST_FILE, TrustDb, open_trust_store
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import Refusal, TrustKind, TrustRecord, make_trust_record
from meshcomm.security.verify import SignatureVerifier
from tests.node.small_disk import small_disk

INCIDENT = "inc"
ROOT = Identity(b"R" * 32)
AID = Identity(b"A" * 32)
DEVICE = Identity(b"D" * 32)
WALL = 1_000_000.0
ROOTS = frozenset({ROOT.public_key})


def rec(signer: Identity, kind: TrustKind, subject: bytes) -> TrustRecord:
    return make_trust_record(signer, incident=INCIDENT, kind=kind, subject=subject,
                             issued_at=100)


def test_records_survive_a_restart_and_replays_stay_refused(tmp_path: Path) -> None:
    path = tmp_path / TRUST_FILE
    db, store = open_trust_store(path, INCIDENT, ROOTS, SignatureVerifier())
    add = rec(ROOT, TrustKind.ADD_AGENCY, AID.public_key)
    for r in (add, rec(AID, TrustKind.REVOKE_DEVICE, DEVICE.public_key),
              rec(ROOT, TrustKind.REVOKE_AGENCY, AID.public_key)):
        assert store.offer(r, WALL) is None
    # the agency revocation voided the addition and AID's revocation: gone from disk too
    assert db.count() == 1
    db.close()
    db, store = open_trust_store(path, INCIDENT, ROOTS, SignatureVerifier())
    assert len(store) == 1 and store.key_revoked(AID.public_key)
    # replayed after the restart: the addition of the revoked key, AID's old revocation
    assert store.offer(add, WALL) is Refusal.UNAUTHORISED
    assert store.offer(rec(AID, TrustKind.REVOKE_DEVICE, DEVICE.public_key), WALL) \
        is Refusal.UNAUTHORISED
    assert db.count() == 1
    db.close()


def test_corrupt_rows_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / TRUST_FILE
    db, store = open_trust_store(path, INCIDENT, ROOTS, SignatureVerifier())
    good = rec(ROOT, TrustKind.REVOKE_DEVICE, DEVICE.public_key)
    assert store.offer(good, WALL) is None
    db.close()
    other = rec(ROOT, TrustKind.REVOKE_DEVICE, AID.public_key)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executemany("INSERT INTO trust (record_id, data) VALUES (?, ?)", [
        (b"garbage1", b"\x93\x01\x02"),                     # not a record
        (b"wrongid!", other.to_bytes()),                    # a record under another id
        (b"textrow!", "text"),                              # not a blob
        (b"trunc!!!", good.to_bytes()[:-5])])
    conn.close()
    db = TrustDb.open(path)
    rows = db.load()
    assert rows == [good] and db.skipped_rows == 4
    db.close()


def test_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / TRUST_FILE
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError):
        TrustDb.open(path)


def test_a_full_disk_refuses_the_record_until_it_frees(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        db, store = open_trust_store(disk.path / TRUST_FILE, INCIDENT, ROOTS,
                                     SignatureVerifier())
        record = rec(ROOT, TrustKind.REVOKE_DEVICE, DEVICE.public_key)
        disk.fill()
        assert store.offer(record, WALL) is Refusal.NOT_DURABLE
        assert not store.key_revoked(DEVICE.public_key) and db.write_errors == 1
        disk.free()
        assert store.offer(record, WALL) is None and store.key_revoked(DEVICE.public_key)
        db.close()
        db, again = open_trust_store(disk.path / TRUST_FILE, INCIDENT, ROOTS,
                                     SignatureVerifier())
        assert again.key_revoked(DEVICE.public_key)
        db.close()
