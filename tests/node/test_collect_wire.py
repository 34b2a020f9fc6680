"""The collection wire format: round trips, and any bytes give a value or DecodeError
(garbage, truncation, oversize, zlib bombs, rows of the wrong shape)."""

from __future__ import annotations

import contextlib
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.node.collect_wire import (
    MAX_CREDENTIAL_BYTES,
    MAX_PART_TOTAL,
    MAX_ROWS_PER_CHUNK,
    MAX_ROWS_RAW_BYTES,
    MAX_ROWS_Z_BYTES,
    ChunkStatus,
    JournalChunk,
    JournalPull,
    compress_rows,
    decode_chunk_untrusted,
    decode_pull_untrusted,
    decompress_rows_untrusted,
    encode_chunk,
    encode_pull,
)

HASH = b"\x11" * 32
GOOD_ROW = [1, 1.5, 1.7e9, b"\x01" * 32, b"sip.message", msgpack.packb({"a": 1}), bytes(32),
            HASH]

pulls = st.builds(JournalPull, from_seq=st.integers(1, 2**63 - 1),
                  max_rows=st.integers(1, MAX_ROWS_PER_CHUNK),
                  part_offset=st.integers(0, MAX_PART_TOTAL),
                  credential=st.binary(max_size=MAX_CREDENTIAL_BYTES))
chunks = st.builds(JournalChunk, status=st.just(ChunkStatus.OK),
                   from_seq=st.integers(1, 2**63 - 1), rows_z=st.binary(max_size=2000),
                   row_count=st.integers(1, 1), more=st.booleans(),
                   part_total=st.integers(4000, MAX_PART_TOTAL),
                   head_seq=st.integers(0, 2**63 - 1), part_offset=st.integers(0, 2000))


@given(pulls)
def test_pull_round_trip(pull: JournalPull) -> None:
    assert decode_pull_untrusted(encode_pull(pull)) == pull


@given(chunks)
def test_chunk_round_trip(chunk: JournalChunk) -> None:
    assert decode_chunk_untrusted(encode_chunk(chunk)) == chunk


@settings(max_examples=400)
@given(st.binary(max_size=3000))
def test_any_bytes_are_a_pull_a_chunk_or_decode_error(data: bytes) -> None:
    for decode in (decode_pull_untrusted, decode_chunk_untrusted):
        with contextlib.suppress(DecodeError):
            decode(data)


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.integers(0, MAX_ROWS_PER_CHUNK))
def test_any_bytes_are_rows_or_decode_error(data: bytes, count: int) -> None:
    for blob in (data, zlib.compress(data)):
        with contextlib.suppress(DecodeError):
            decompress_rows_untrusted(blob, count)


def test_truncated_messages_are_refused() -> None:
    pull = encode_pull(JournalPull(5, 10, 0, b"c" * 40))
    chunk = encode_chunk(JournalChunk(ChunkStatus.OK, 3, b"z" * 50, 1, True, 90, 9, 20))
    for cut in range(len(pull)):
        with pytest.raises(DecodeError):
            decode_pull_untrusted(pull[:cut])
    for cut in range(len(chunk)):
        with pytest.raises(DecodeError):
            decode_chunk_untrusted(chunk[:cut])


def test_oversize_and_out_of_range_fields_are_refused() -> None:
    bad_pulls = [
        [1, 1, 300, 0, b""],                          # more rows than a chunk carries
        [1, 0, 10, 0, b""],                           # seq 0
        [1, 1, 10, MAX_PART_TOTAL + 1, b""],          # part offset beyond any row
        [1, 1, 10, 0, b"x" * (MAX_CREDENTIAL_BYTES + 1)],
        [2, 1, 10, 0, b""],                           # another version
        [True, 1, 10, 0, b""],
    ]
    for fields in bad_pulls:
        with pytest.raises(DecodeError):
            decode_pull_untrusted(msgpack.packb(fields, use_bin_type=True))
    bad_chunks = [
        [1, 9, 1, b"", 0, False, 0, 0, 0],            # unknown status
        [1, 0, 1, b"x" * (MAX_ROWS_Z_BYTES + 1), 1, True, 0, 0, 0],
        [1, 0, 1, b"x", 2, True, 10, 0, 0],           # a part of two rows
        [1, 0, 1, b"x" * 20, 1, True, 10, 0, 0],      # a part longer than its total
        [1, 0, 1, b"x" * 5, 1, True, 10, 0, 6],       # ... from its offset
        [1, 0, 1, b"x", 1, True, 0, 0, 3],            # an offset without a part
        [1, 1, 1, b"x", 1, False, 0, 0, 0],           # rows in a REFUSED chunk
        [1, 0, 1, b"", 0, 1, 0, 0, 0],                # more not a boolean
        [1, 0, 1, b"", 0, False, 0, 0],               # eight fields
    ]
    for fields in bad_chunks:
        with pytest.raises(DecodeError):
            decode_chunk_untrusted(msgpack.packb(fields, use_bin_type=True))


def test_rows_decode_and_bad_rows_are_refused() -> None:
    rows = decompress_rows_untrusted(compress_rows([GOOD_ROW]), 1)
    assert rows == [tuple(GOOD_ROW)]
    bad = [
        [*GOOD_ROW[:6], b"short", HASH],             # prev hash of the wrong length
        [*GOOD_ROW[:4], b"\xff\xfe", *GOOD_ROW[5:]],  # type not UTF-8
        [GOOD_ROW[0], float("nan"), *GOOD_ROW[2:]],
        [True, *GOOD_ROW[1:]],                       # a boolean seq
        [0, *GOOD_ROW[1:]],
        [*GOOD_ROW[:3], b"", *GOOD_ROW[4:]],          # empty node id
        GOOD_ROW[:7],
    ]
    for row in bad:
        with pytest.raises(DecodeError):
            decompress_rows_untrusted(compress_rows([row]), 1)
    with pytest.raises(DecodeError):                  # count disagrees
        decompress_rows_untrusted(compress_rows([GOOD_ROW]), 2)


def test_zlib_bombs_truncation_and_trailing_data_are_refused() -> None:
    bomb = zlib.compress(b"\x00" * (MAX_ROWS_RAW_BYTES * 4), 9)
    assert len(bomb) < MAX_ROWS_Z_BYTES
    with pytest.raises(DecodeError, match="inflate beyond"):
        decompress_rows_untrusted(bomb, 1)
    good = compress_rows([GOOD_ROW])
    with pytest.raises(DecodeError):
        decompress_rows_untrusted(good[:-3], 1)
    with pytest.raises(DecodeError):
        decompress_rows_untrusted(good + b"junk", 1)
