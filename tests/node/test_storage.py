"""SfStorage: the SQLite adapter of store-and-forward survives reopening, and a corrupt
row is reported and skipped instead of failing the load."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import ConfigError, DecodeError, LocalProtocolError
from meshcomm.node.sf_delivered import DeliveredRecord
from meshcomm.node.storage import (
    SfStorage,
    decode_delivered_row_untrusted,
    decode_held_row_untrusted,
)
from meshcomm.node.storeforward import HeldMessage, HeldState, PersistOp, SfPersist
from meshcomm.node.storeforward_wire import make_parcel
from meshcomm.security.identity import Identity
from tests.node.small_disk import read_only_connection, small_disk

ORIGIN = Identity(hashlib.sha256(b"storage-origin").digest())


def held(n: int, *, own: bool = True, state: HeldState = HeldState.QUEUED,
         holder: str = "sip:o@x") -> HeldMessage:
    parcel = make_parcel(ORIGIN, incident="inc", msg_id=bytes([n]) * 16, from_aor="sip:o@x",
                         to_aor=f"sip:d{n}@x", created_wall_s=1000.0 + n, sip=b"MESSAGE %d" % n)
    return HeldMessage(parcel, own, state, holder)


def store(h: HeldMessage) -> SfPersist:
    return SfPersist(PersistOp.STORE, h.msg_id, h)


def test_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sf.db"
    a, b, c = held(1), held(2, own=False), held(3)
    with SfStorage.open(path) as db:
        db.apply(store(a))
        db.apply_all([store(b), store(c), SfPersist(PersistOp.REMOVE, c.msg_id)])
        moved = HeldMessage(a.parcel, True, HeldState.HELD_BY, "sip:relay@x")
        db.apply(store(moved))
        db.apply(SfPersist(PersistOp.DELIVERED, b"d" * 16, wall_s=5.0))
        db.apply(SfPersist(PersistOp.DELIVERED, b"e" * 16, wall_s=6.0))
        db.apply(SfPersist(PersistOp.FORGET, b"e" * 16))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with SfStorage.open(path) as db:
        messages, delivered, statuses = db.load()
        assert db.skipped_rows == 0
    assert messages == [moved, b]
    assert delivered == [b"d" * 16]
    assert statuses == [moved.status()]
    assert statuses[0].state is HeldState.HELD_BY and statuses[0].holder == "sip:relay@x"


def test_failed_batch_is_rolled_back(tmp_path: Path) -> None:
    with SfStorage.open(tmp_path / "sf.db") as db:
        with pytest.raises(LocalProtocolError):
            db.apply_all([store(held(1)), SfPersist(PersistOp.STORE, b"x" * 16)])
        assert db.load()[0] == []


def _insert_raw(path: Path, row: tuple[object, ...]) -> None:
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO held VALUES (?, ?, ?, ?, ?, ?)", row)
    conn.commit()
    conn.close()


def test_corrupt_rows_are_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "sf.db"
    good = held(1)
    with SfStorage.open(path) as db:
        db.apply(store(good))
        db.apply(SfPersist(PersistOp.DELIVERED, b"d" * 16, wall_s=1.0))
    p = held(2).parcel
    corrupt: list[tuple[object, ...]] = [
        (b"a" * 16, b"\xc1garbage", p.signature, 1, "queued", "x"),      # not msgpack
        (b"b" * 16, p.signed, p.signature, 1, "queued", "x"),            # id mismatch
        (p.msg_id, p.signed.replace(b"MESSAGE", b"MASSAGE"), p.signature, 1, "queued", "x"),
        (b"c" * 16, p.signed, b"short", 1, "queued", "x"),               # bad signature
        (p.msg_id, p.signed, p.signature, 7, "queued", "x"),             # own not 0/1
        (p.msg_id, p.signed, p.signature, 1, "lost", "x"),               # unknown state
        (p.msg_id, p.signed, p.signature, 1, b"\xff\xfe", "x"),          # not UTF-8
        (p.msg_id, p.signed, p.signature, 1, "queued", 12),              # holder not text
        ("text-id", p.signed, p.signature, 1, "queued", "x"),            # id not a blob
    ]
    for i, row in enumerate(corrupt):
        _insert_raw(path, (bytes([0x80 + i]) * 16, *row[1:]) if i >= 4 else row)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO delivered (msg_id, wall_s) VALUES (?, ?)", (b"tiny", 1.0))
    conn.commit()
    conn.close()
    with SfStorage.open(path) as db:
        messages, delivered, statuses = db.load()
        assert db.skipped_rows == len(corrupt) + 1
        assert len(db.skipped_reasons) == db.skipped_rows
    assert messages == [good] and delivered == [b"d" * 16]
    assert [s.msg_id for s in statuses] == [good.msg_id]


def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "sf.db"
    path.write_bytes(b"this is not SQLite at all" * 100)
    with pytest.raises(ConfigError):
        SfStorage.open(path)


def test_closed_storage_refuses_use(tmp_path: Path) -> None:
    db = SfStorage.open(tmp_path / "sf.db")
    db.close()
    db.close()
    with pytest.raises(LocalProtocolError):
        db.load()


cells = st.none() | st.integers(-5, 5) | st.floats() | st.text(max_size=20) | st.binary(
    max_size=120)


@settings(max_examples=500)
@given(st.lists(cells, min_size=0, max_size=8))
def test_any_row_gives_a_message_or_decode_error(row: list[object]) -> None:
    for decoder in (decode_held_row_untrusted, decode_delivered_row_untrusted):
        with contextlib.suppress(DecodeError):
            decoder(row)


@settings(max_examples=200)
@given(st.binary(max_size=200), st.binary(max_size=70))
def test_any_parcel_bytes_in_a_row_give_decode_error(parcel: bytes, sig: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_held_row_untrusted([b"m" * 16, parcel, sig, 1, "queued", "x"])


def test_a_write_on_a_full_disk_fails_whole_and_writing_resumes_with_room(
        tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk, SfStorage.open(disk.path / "sf.db") as db:
        db.apply(store(held(1)))
        disk.fill()
        big = [store(held(n)) for n in range(2, 60)]
        with pytest.raises(sqlite3.Error):
            db.apply_all([*big, SfPersist(PersistOp.DELIVERED, b"d" * 16, wall_s=5.0,
                                          origin=b"o" * 32)])
        disk.free()
        assert [h.msg_id for h in db.load()[0]] == [held(1).msg_id]   # all or nothing
        db.apply_all(big)                            # the connection is usable again
        db.apply(SfPersist(PersistOp.DELIVERED, b"d" * 16, wall_s=5.0, origin=b"o" * 32))
        assert len(db.load()[0]) == 59
        assert db.load_delivered() == [DeliveredRecord(b"d" * 16, 5.0, b"o" * 32)]


def test_a_read_only_database_refuses_writes_and_stays_usable(tmp_path: Path) -> None:
    path = tmp_path / "sf.db"
    SfStorage.open(path).close()
    db = SfStorage(read_only_connection(path), path)
    with pytest.raises(sqlite3.Error):
        db.apply(store(held(1)))
    with pytest.raises(sqlite3.Error):                # no transaction left open
        db.apply(store(held(1)))
    assert db.load()[0] == []
    db.close()


def test_a_first_format_file_gains_the_origin_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE delivered (msg_id BLOB PRIMARY KEY, wall_s REAL NOT NULL);"
                       "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
                       "INSERT INTO meta VALUES ('format', 1);")
    conn.execute("INSERT INTO delivered VALUES (?, ?)", (b"x" * 16, 7.0))
    conn.commit()
    conn.close()
    with SfStorage.open(path) as db:
        assert db.load_delivered() == [DeliveredRecord(b"x" * 16, 7.0, b"")]
        assert db.load()[1] == [b"x" * 16]
