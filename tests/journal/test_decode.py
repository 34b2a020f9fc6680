"""The untrusted decoders: any bytes (or any stored row) -> value or DecodeError."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.journal.chain import JournalChain, JournalEntry
from meshcomm.journal.codec import (
    MAX_CONTAINER_ITEMS,
    MAX_DATA_BYTES,
    MAX_INT,
    MIN_INT,
    canonical_data_untrusted,
    decode_data_untrusted,
    normalize_data,
)
from meshcomm.journal.store import decode_row_untrusted
from tests.journal.helpers import NODE_ID

scalars = (st.none() | st.booleans() | st.integers(MIN_INT, MAX_INT)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
           | st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                      max_leaves=30)
data_maps = st.dictionaries(st.text(max_size=8), values, max_size=6)
sqlite_values = (st.none() | st.integers(-(2**63), 2**63 - 1) | st.floats()
                 | st.binary(max_size=40) | st.text(max_size=20))


def _decoded_or_error(blob: bytes) -> dict[str, object] | None:
    try:
        value = decode_data_untrusted(blob)
    except DecodeError:
        return None
    assert isinstance(value, dict)
    assert all(isinstance(key, str) for key in value)
    return value


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_decode_error(blob: bytes) -> None:
    _decoded_or_error(blob)


@given(data_maps)
def test_data_round_trips_and_reencodes_identically(data: dict[str, object]) -> None:
    plain, encoded = normalize_data(data)
    assert decode_data_untrusted(encoded) == plain
    assert canonical_data_untrusted(decode_data_untrusted(encoded)) == encoded


@settings(max_examples=50)
@given(data_maps, st.data())
def test_truncated_encodings_decode_or_raise(data: dict[str, object],
                                             draw: st.DataObject) -> None:
    _, encoded = normalize_data(data)
    cut = draw.draw(st.integers(0, max(len(encoded) - 1, 0)))
    _decoded_or_error(encoded[:cut])


@given(data_maps, st.binary(min_size=1, max_size=8), st.data())
def test_mutated_encodings_decode_or_raise(data: dict[str, object], junk: bytes,
                                           draw: st.DataObject) -> None:
    _, encoded = normalize_data(data)
    at = draw.draw(st.integers(0, len(encoded)))
    _decoded_or_error(encoded[:at] + junk + encoded[at + len(junk):])


@pytest.mark.parametrize("blob", [
    b"\x80" * (MAX_DATA_BYTES + 1),                       # oversized
    b"\x91" * 100_000 + b"\x80",                           # nested past the limits
    b"\x81\xa1a" + b"\x81\xa1a" * 40 + b"\xc0",            # maps nested past the limit
    b"\xdd\xff\xff\xff\xff",                               # claims 4 G items
    b"\xde\x00\x01\x01\x02",                               # int map key
    b"\x81\xa1a\xc7\x01\x05x",                             # ext type
    b"\x81\xa1a\xd6\xff\x00\x00\x00\x00",                  # msgpack timestamp
    b"\x81\xa1a\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",      # NaN
    b"\x81\xa1a\xa2\xff\xfe",                              # invalid UTF-8 string
    b"\x80\x80",                                           # trailing bytes
    b"",
    msgpack.packb({"a": list(range(MAX_CONTAINER_ITEMS + 1))}),
])
def test_hostile_encodings_are_decode_errors(blob: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_data_untrusted(blob)


def test_non_bytes_input_is_a_decode_error() -> None:
    for value in (None, 5, "text", [b"\x80"]):
        with pytest.raises(DecodeError):
            decode_data_untrusted(value)  # type: ignore[arg-type]


@given(st.lists(sqlite_values, min_size=0, max_size=10))
def test_any_row_decodes_or_raises_decode_error(row: list[object]) -> None:
    try:
        entry = decode_row_untrusted(tuple(row))
    except DecodeError:
        return
    assert isinstance(entry, JournalEntry)


def _valid_row(data: dict[str, object]) -> list[object]:
    entry, encoded = JournalChain(NODE_ID).append_encoded("t", data, 1.0, 2.0)
    return [entry.seq, entry.mono_s, entry.wall_s, entry.node_id, entry.type.encode(),
            encoded, entry.prev_hash, entry.entry_hash]


@given(data_maps, st.integers(0, 7), sqlite_values)
def test_rows_with_one_bad_column_decode_or_raise(data: dict[str, object], column: int,
                                                  value: object) -> None:
    row = _valid_row(data)
    assert decode_row_untrusted(tuple(row)).data == normalize_data(data)[0]
    row[column] = value
    try:
        entry = decode_row_untrusted(tuple(row))
    except DecodeError:
        return
    assert math.isfinite(entry.mono_s) and math.isfinite(entry.wall_s)
    assert len(entry.prev_hash) == len(entry.entry_hash) == 32


@given(st.recursive(st.none() | st.integers() | st.floats() | st.text(max_size=5)
                    | st.binary(max_size=5) | st.sets(st.integers(), max_size=2),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.integers() | st.text(max_size=3), inner, max_size=3),
                    max_leaves=20))
def test_canonical_data_untrusted_accepts_or_raises(value: object) -> None:
    try:
        encoded = canonical_data_untrusted({"v": value})
    except DecodeError:
        return
    assert canonical_data_untrusted(decode_data_untrusted(encoded)) == encoded
