"""Canonical encoding of journal entries, and the untrusted decoder for stored data.

The hash chain needs one byte string per entry that every reader derives the same way:
msgpack with ``bin`` types for bytes, maps with keys in sorted order, floats always as
float64, ``-0.0`` folded to ``0.0`` (SQLite may store integral REALs as integers and
would lose the sign), tuples encoded as arrays. :func:`normalize_data` turns a caller's
data into exactly the plain values a decoder will return, so an entry built in memory
compares equal to the same entry read back from disk.

Our own data that breaks the limits is a :class:`~meshcomm.errors.LocalProtocolError`
(a bug in the caller); stored bytes that break them are a
:class:`~meshcomm.errors.DecodeError` (a damaged or tampered journal).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any, Final

import msgpack

from meshcomm.errors import DecodeError, LocalProtocolError

#: Length of every hash in the chain (SHA-256).
HASH_LEN: Final = 32
#: ``prev_hash`` of the first entry of a journal.
GENESIS_HASH: Final = bytes(HASH_LEN)
#: Sequence number of the first entry of a journal.
FIRST_SEQ: Final = 1
#: Largest encoded ``data`` of one entry.
MAX_DATA_BYTES: Final = 65_536
#: Deepest nesting of lists/maps inside ``data`` (the top-level map is depth 1).
MAX_NESTING_DEPTH: Final = 16
#: Most items in one list or map inside ``data``.
MAX_CONTAINER_ITEMS: Final = 4_096
#: Longest event type name, in UTF-8 bytes.
MAX_TYPE_BYTES: Final = 64
#: Longest node id (a NodeId is 32 bytes; the simulator may use shorter ones).
MAX_NODE_ID_BYTES: Final = 64
#: Integer range msgpack can carry.
MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**64 - 1
#: Largest sequence number (SQLite INTEGER PRIMARY KEY is a signed 64-bit integer).
MAX_SEQ: Final = 2**63 - 1

_UNPACK_ERRORS = (ValueError, TypeError, OverflowError, msgpack.exceptions.UnpackException)


class _Invalid(Exception):
    """Internal: a value outside the journal data model (message says why)."""


def _plain_float(value: float) -> float:
    if not math.isfinite(value):
        raise _Invalid("non-finite float")
    return float(value) + 0.0  # folds -0.0 to 0.0


def _plain(value: object, depth: int) -> object:
    """Return ``value`` as plain journal data (exact builtin types, sorted maps)."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, bool):  # pragma: no cover - bool has only two instances
        return bool(value)
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise _Invalid(f"integer of {value.bit_length()} bits out of range")
        return int(value)
    if isinstance(value, float):
        return _plain_float(value)
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:            # a lone surrogate (surrogateescape'd bytes)
                raise _Invalid("string is not valid UTF-8") from None
        return str.__str__(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if depth >= MAX_NESTING_DEPTH:
        raise _Invalid(f"nesting deeper than {MAX_NESTING_DEPTH}")
    if isinstance(value, list | tuple):
        if len(value) > MAX_CONTAINER_ITEMS:
            raise _Invalid(f"list longer than {MAX_CONTAINER_ITEMS}")
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, Mapping):
        return _plain_map(value, depth + 1)
    raise _Invalid(f"unsupported type {type(value).__name__}")


def _plain_map(value: Mapping[Any, object], depth: int) -> dict[str, object]:
    if len(value) > MAX_CONTAINER_ITEMS:
        raise _Invalid(f"map larger than {MAX_CONTAINER_ITEMS}")
    keys: list[str] = []
    for key in value:
        if not isinstance(key, str):
            raise _Invalid(f"map key of type {type(key).__name__}")
        if not key.isascii():
            _plain(key, depth)                # not valid UTF-8: _Invalid
        keys.append(key)
    return {str.__str__(key): _plain(value[key], depth) for key in sorted(keys)}


def pack(value: object) -> bytes:
    """msgpack bytes of already-plain journal data (deterministic)."""
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def normalize_data(data: Mapping[str, object]) -> tuple[dict[str, object], bytes]:
    """Plain form and canonical bytes of a caller's ``data``; LocalProtocolError if invalid."""
    if not isinstance(data, Mapping):
        raise LocalProtocolError(f"journal data must be a mapping, not {type(data).__name__}")
    try:
        plain = _plain_map(data, 1)
    except _Invalid as exc:
        raise LocalProtocolError(f"journal data not storable: {exc}") from None
    encoded = pack(plain)
    if len(encoded) > MAX_DATA_BYTES:
        raise LocalProtocolError(f"journal data is {len(encoded)} bytes, max {MAX_DATA_BYTES}")
    return plain, encoded


#: Longest text a value outside the data model is stored as (by :func:`storable_data`).
MAX_STORABLE_TEXT_CHARS: Final = 256


def storable_data(data: Mapping[str, object]) -> dict[str, object]:
    """``data`` made storable, for values that came from outside (a peer's numbers,
    strings): a string that is not valid UTF-8 (bytes a parser kept with surrogateescape)
    gets "?" for each bad code point; an integer outside the msgpack range, a non-finite
    float or a value of another type becomes its (bounded) text, a non-str key its text,
    a container beyond the limits is cut to them; data still too large once encoded
    becomes a short summary. Never raises; :func:`normalize_data` accepts the result."""
    plain = _storable_map(data, 1)
    if len(pack(plain)) > MAX_DATA_BYTES:
        return {"truncated": True, "keys": [k[:MAX_STORABLE_TEXT_CHARS] for k in
                                            sorted(plain)[:MAX_NESTING_DEPTH]]}
    return plain


def _storable(value: object, depth: int) -> object:
    try:
        return _plain(value, depth)
    except _Invalid:
        pass
    if isinstance(value, list | tuple) and depth < MAX_NESTING_DEPTH:
        return [_storable(item, depth + 1) for item in value[:MAX_CONTAINER_ITEMS]]
    if isinstance(value, Mapping) and depth < MAX_NESTING_DEPTH:
        return _storable_map(value, depth + 1)
    if isinstance(value, str):                # not UTF-8: each bad code point as "?"
        return value.encode("utf-8", "replace").decode("utf-8")[:MAX_STORABLE_TEXT_CHARS]
    try:
        text = repr(value) if not isinstance(value, int | float) else str(value)
    except (ValueError, TypeError, RecursionError):  # int beyond str() digits, odd repr
        text = f"<{type(value).__name__}>"
    return text[:MAX_STORABLE_TEXT_CHARS]


def _storable_map(value: Mapping[Any, object], depth: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for key in list(value)[:MAX_CONTAINER_ITEMS]:
        name = _storable(key if isinstance(key, str) else str(_storable(key, depth)), depth)
        out[str.__str__(str(name))] = _storable(value[key], depth)
    return {key: out[key] for key in sorted(out)}


def check_type_name(type_name: str) -> str:
    """The event type as a plain str; LocalProtocolError if empty or too long."""
    if not isinstance(type_name, str) or not type_name:
        raise LocalProtocolError("journal event type must be a non-empty str")
    if len(type_name.encode("utf-8", "surrogatepass")) > MAX_TYPE_BYTES:
        raise LocalProtocolError(f"journal event type longer than {MAX_TYPE_BYTES} bytes")
    return str.__str__(type_name)


def check_timestamp(name: str, value: float) -> float:
    """A finite float timestamp (``-0.0`` folded); LocalProtocolError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LocalProtocolError(f"{name} must be a number")
    try:
        return _plain_float(float(value))
    except (_Invalid, OverflowError):
        raise LocalProtocolError(f"{name} must be finite") from None


def decode_data_untrusted(blob: bytes) -> dict[str, object]:
    """Decode stored ``data`` bytes into plain journal data; raises only DecodeError."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise DecodeError(f"journal data is {type(blob).__name__}, not bytes")
    if len(blob) > MAX_DATA_BYTES:
        raise DecodeError(f"journal data is {len(blob)} bytes, max {MAX_DATA_BYTES}",
                          reason="oversized")
    try:
        value = msgpack.unpackb(
            bytes(blob), raw=False, use_list=True, strict_map_key=True,
            max_str_len=MAX_DATA_BYTES, max_bin_len=MAX_DATA_BYTES,
            max_array_len=MAX_CONTAINER_ITEMS, max_map_len=MAX_CONTAINER_ITEMS,
            max_ext_len=0,
        )
    except _UNPACK_ERRORS as exc:
        raise DecodeError(f"journal data is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise DecodeError("journal data is not a map")
    try:
        return _plain_map(value, 1)
    except _Invalid as exc:
        raise DecodeError(f"journal data invalid: {exc}") from None


def canonical_data_untrusted(data: Mapping[str, object]) -> bytes:
    """Canonical bytes of any entry's ``data`` (e.g. one handed to the verifier).

    Raises only DecodeError when ``data`` is outside the journal data model.
    """
    if not isinstance(data, Mapping):
        raise DecodeError(f"journal data is {type(data).__name__}, not a mapping")
    try:
        encoded = pack(_plain_map(data, 1))
    except _Invalid as exc:
        raise DecodeError(f"journal data invalid: {exc}") from None
    if len(encoded) > MAX_DATA_BYTES:
        raise DecodeError(f"journal data is {len(encoded)} bytes, max {MAX_DATA_BYTES}",
                          reason="oversized")
    return encoded


_ENTRY_ARRAY_HEADER: Final = b"\x96"  # msgpack fixarray of the six hashed fields


def compute_entry_hash(prev_hash: bytes, seq: int, mono_s: float, wall_s: float,
                       node_id: bytes, type_name: str, data_bytes: bytes) -> bytes:
    """SHA-256(prev_hash || canonical([seq, mono_s, wall_s, node_id, type, data])).

    ``data_bytes`` is the canonical encoding of ``data`` (:func:`normalize_data`), so the
    body is byte-for-byte ``pack([seq, mono_s, wall_s, node_id, type, data])``.
    """
    body = b"".join((
        _ENTRY_ARRAY_HEADER, pack(seq), pack(mono_s + 0.0), pack(wall_s + 0.0),
        pack(bytes(node_id)), pack(type_name), data_bytes,
    ))
    return hashlib.sha256(bytes(prev_hash) + body).digest()
