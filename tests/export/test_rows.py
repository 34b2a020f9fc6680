"""The export's fast row decoder (meshcomm/export/rows.py) gives exactly what the journal's
own decoder gives: the same entry for every row, canonical bytes only when the stored
bytes are the canonical encoding (so the verifier's verdict cannot change), and the same
DecodeError for rows that do not decode."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.export.rows import canonical_data, decode_row, decode_seen_row
from meshcomm.journal.codec import MAX_NESTING_DEPTH, canonical_data_untrusted, normalize_data
from meshcomm.journal.store import decode_row_untrusted

_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
            | st.binary(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)
_maps = st.dictionaries(st.text(max_size=8), _values, max_size=6)


def _row(blob: bytes, **overrides: Any) -> tuple[object, ...]:
    row: dict[str, object] = {"seq": 7, "mono": 1.5, "wall": 1_800_000_000.25,
                              "node": b"\x01" * 32, "type": b"sip.message", "data": blob,
                              "prev": b"\x02" * 32, "hash": b"\x03" * 32}
    row.update(overrides)
    return tuple(row.values())


def _same_as_the_journal_decoder(row: tuple[object, ...]) -> None:
    try:
        expected = decode_row_untrusted(row)
    except DecodeError:
        with pytest.raises(DecodeError):
            decode_row(row)
        return
    entry, canonical = decode_row(row)
    assert entry == expected
    assert list(entry.data) == list(expected.data)          # the same key order too
    if canonical is not None:
        assert canonical == canonical_data_untrusted(expected.data)


@settings(max_examples=300, deadline=None)
@given(_maps)
def test_canonical_rows_decode_the_same_and_keep_their_bytes(data: dict[str, object]) -> None:
    try:
        _, blob = normalize_data(data)
    except Exception:                                   # outside the data model
        return
    entry, canonical = decode_row(_row(blob))
    assert canonical == blob and entry == decode_row_untrusted(_row(blob))
    assert decode_seen_row(_row(blob)) == (entry.seq, entry.mono_s, entry.wall_s, entry.type,
                                           entry.data)


@settings(max_examples=300, deadline=None)
@given(_maps, st.integers(0, 2**16), st.binary(min_size=1, max_size=3))
def test_any_stored_bytes_decode_as_the_journal_decoder_says(
        data: dict[str, object], where: int, junk: bytes) -> None:
    raw = msgpack.packb(data, use_bin_type=True)              # keys in any order
    _same_as_the_journal_decoder(_row(raw))
    cut = where % (len(raw) + 1)
    _same_as_the_journal_decoder(_row(raw[:cut] + junk + raw[cut + len(junk):]))


@pytest.mark.parametrize("blob", [
    msgpack.packb({"b": 1, "a": 2}),                            # keys not sorted
    msgpack.packb({"a": -0.0}),                                 # -0.0 is stored as 0.0
    b"\x81\xa1a\xca" + struct.pack(">f", 1.5),                  # a float32
    b"\x81\xa1a\xcd\x00\x05",                                   # 5 as a uint16
    b"\x81\xa1a\xd9\x01b",                                      # "b" as a str8
    b"\x82\xa1a\x01\xa1a\x02",                                  # the key twice
    msgpack.packb({"a": float("inf")}),
    msgpack.packb({b"k": 1}, use_bin_type=True),                # a bytes key
    msgpack.packb({"a": 1}) + b"\x00",                          # trailing bytes
    msgpack.packb([1, 2]),                                      # not a map
    msgpack.packb({"a": msgpack.ExtType(1, b"x")}),
])
def test_non_canonical_stored_bytes_take_the_slow_road(blob: bytes) -> None:
    _same_as_the_journal_decoder(_row(blob))
    assert canonical_data(blob) is None


def test_nesting_and_row_fields_are_checked() -> None:
    deep: object = 1
    for _ in range(MAX_NESTING_DEPTH):
        deep = [deep]
    blob = msgpack.packb({"a": deep})
    assert canonical_data(blob) is None
    _same_as_the_journal_decoder(_row(blob))
    _, good = normalize_data({"a": 1})
    for bad in ({"seq": 0}, {"seq": True}, {"seq": "7"}, {"mono": float("nan")},
                {"wall": 3}, {"node": b""}, {"type": b""}, {"type": b"\xff"},
                {"prev": b"\x00"}, {"hash": "x" * 32}, {"data": "text"}):
        _same_as_the_journal_decoder(_row(good, **bad))
    assert decode_row(_row(good, wall=3))[1] is None            # an int stamp: slow road
    _same_as_the_journal_decoder(_row(good)[:7])
