"""Fast decoding of stored journal rows for the export (sans-IO).

:func:`meshcomm.journal.store.decode_row_untrusted` checks every value of an entry's data
against the journal data model, and the verifier then encodes the data again to hash it
(:func:`meshcomm.journal.codec.canonical_data_untrusted`): two walks over every value in
Python, most of an export's time. A journal written by a node stores exactly the
canonical encoding, so :func:`decode_row` takes a shorter road to the same result:

1. the data bytes are unpacked by msgpack (C) with the codec's limits;
2. packing the result again must give the stored bytes back (so every number, string and
   container has its one canonical encoding, and no map repeats a key), and one walk
   checks what packing cannot see: map keys are strings in sorted order, floats are
   finite and not ``-0.0``, nesting is within :data:`MAX_NESTING_DEPTH`.

Then the stored bytes *are* the canonical bytes, handed to the verifier as they are
(:meth:`meshcomm.journal.audit.StreamVerifier.feed`), and the decoded data is what
``decode_row_untrusted`` returns. Anything else (a hand-edited row, an odd encoding) takes
the slow road: ``decode_row_untrusted`` and no canonical bytes, so the verifier's verdict
is the same either way. Raises only DecodeError.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import msgpack

from meshcomm.export.timeline import Light
from meshcomm.journal.chain import JournalEntry
from meshcomm.journal.codec import (
    FIRST_SEQ,
    HASH_LEN,
    MAX_CONTAINER_ITEMS,
    MAX_DATA_BYTES,
    MAX_NESTING_DEPTH,
    MAX_NODE_ID_BYTES,
    MAX_SEQ,
    MAX_TYPE_BYTES,
    pack,
)
from meshcomm.journal.store import decode_row_untrusted

_ROW_LEN: Final = 8
_SCALARS: Final = frozenset({str, int, bytes, bool, type(None)})
_UNPACK_ERRORS: Final = (ValueError, TypeError, OverflowError, RecursionError,
                         msgpack.exceptions.UnpackException)
#: Event type names seen, decoded once (bounded: a journal has a handful of types).
MAX_TYPE_NAMES: Final = 1024
_type_names: dict[bytes, str] = {}


def _canonical_value(value: object, depth: int) -> bool:
    """True when ``value`` (from msgpack, not a scalar) is plain journal data that packs
    canonically (what packing back cannot show: sorted string keys, finite floats, no
    -0.0, nesting depth)."""
    if type(value) is float:
        return math.isfinite(value) and (value != 0.0 or math.copysign(1.0, value) > 0)
    if depth >= MAX_NESTING_DEPTH:
        return False
    if type(value) is list:
        for item in value:
            if type(item) not in _SCALARS and not _canonical_value(item, depth + 1):
                return False
        return True
    if type(value) is dict:
        return _canonical_map(value, depth + 1)
    return False


def _canonical_map(value: dict[object, object], depth: int) -> bool:
    previous = ""
    for key, item in value.items():
        if type(key) is not str or (key <= previous and previous):
            return False
        previous = key
        if type(item) not in _SCALARS and not _canonical_value(item, depth):
            return False
    return True


def canonical_data(blob: bytes) -> dict[str, object] | None:
    """The data stored as ``blob`` when ``blob`` is its canonical encoding, else None
    (then :func:`meshcomm.journal.codec.decode_data_untrusted` decides)."""
    if len(blob) > MAX_DATA_BYTES:
        return None
    try:
        value = msgpack.unpackb(
            blob, raw=False, use_list=True, strict_map_key=True,
            max_str_len=MAX_DATA_BYTES, max_bin_len=MAX_DATA_BYTES,
            max_array_len=MAX_CONTAINER_ITEMS, max_map_len=MAX_CONTAINER_ITEMS,
            max_ext_len=0)
    except _UNPACK_ERRORS:
        return None
    if type(value) is not dict or not _canonical_map(value, 1):
        return None
    try:
        if pack(value) != blob:
            return None
    except (ValueError, TypeError, OverflowError):
        return None
    return value


def _type_name(raw: object) -> str | None:
    if type(raw) is not bytes:
        return None
    name = _type_names.get(raw)
    if name is None:
        if not 0 < len(raw) <= MAX_TYPE_BYTES:
            return None
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if len(_type_names) < MAX_TYPE_NAMES:
            _type_names[raw] = name
    return name


def decode_row(row: Sequence[object]) -> tuple[JournalEntry, bytes | None]:
    """A stored row (:data:`meshcomm.journal.store.ROW_COLUMNS`, read with
    ``text_factory=bytes``) as an entry, with its data's canonical bytes when the stored
    ones are canonical (else None). The same entry ``decode_row_untrusted`` gives; raises
    only DecodeError."""
    if len(row) == _ROW_LEN:
        seq, mono, wall, node_id, type_raw, blob, prev_hash, entry_hash = row
        name = _type_name(type_raw)
        if (type(seq) is int and FIRST_SEQ <= seq <= MAX_SEQ
                and type(mono) is float and math.isfinite(mono)
                and type(wall) is float and math.isfinite(wall)
                and type(node_id) is bytes and 0 < len(node_id) <= MAX_NODE_ID_BYTES
                and name is not None and type(blob) is bytes
                and type(prev_hash) is bytes and len(prev_hash) == HASH_LEN
                and type(entry_hash) is bytes and len(entry_hash) == HASH_LEN):
            data = canonical_data(blob)
            if data is not None:
                return JournalEntry(seq, mono + 0.0, wall + 0.0, node_id, name, data,
                                    prev_hash, entry_hash), blob
    return decode_row_untrusted(row), None


def decode_seen_row(row: Sequence[object]) -> Light:
    """A row read again inside the read transaction in which :func:`decode_row` found
    every row of its journal canonical (the export's merge pass), as the merge needs it:
    its data is unpacked without the checks, which hold for these very bytes. Anything
    unexpected takes :func:`decode_row`'s road; raises only DecodeError."""
    if len(row) == _ROW_LEN:
        seq, mono, wall, _node_id, type_raw, blob = row[:6]
        name = _type_names.get(type_raw) if type(type_raw) is bytes else None
        if (name is not None and type(blob) is bytes and type(seq) is int
                and type(mono) is float and type(wall) is float):
            try:
                data = msgpack.unpackb(
                    blob, raw=False, strict_map_key=True, max_str_len=MAX_DATA_BYTES,
                    max_bin_len=MAX_DATA_BYTES, max_array_len=MAX_CONTAINER_ITEMS,
                    max_map_len=MAX_CONTAINER_ITEMS, max_ext_len=0)
            except _UNPACK_ERRORS:
                data = None
            if type(data) is dict:
                return seq, mono + 0.0, wall + 0.0, name, data
    return decode_light(row)


def decode_light(row: Sequence[object]) -> Light:
    """:func:`decode_row`'s entry as the merge needs it; raises only DecodeError."""
    entry = decode_row(row)[0]
    return entry.seq, entry.mono_s, entry.wall_s, entry.type, entry.data
