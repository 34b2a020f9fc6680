"""Wire format of journal collection (mesh unicast kinds JOURNAL_PULL and JOURNAL_CHUNK).

A collector (the command post, ``meshcomm ctl collect``) asks a device for its journal rows
from a sequence number on; the device answers with one chunk of rows at a time:

* ``JOURNAL_PULL`` (collector -> device):
  ``msgpack([COLLECT_VERSION, from_seq, max_rows, part_offset, credential])``. ``credential``
  is the collector's agency credential (``meshcomm enroll``; empty without one), checked by
  the device when the collector's key is not listed in its ``[export] collectors``.
  ``part_offset`` is non-zero only while a row too large for one chunk travels in parts.
* ``JOURNAL_CHUNK`` (device -> collector):
  ``msgpack([COLLECT_VERSION, status, from_seq, rows_z, row_count, more, part_total,
  head_seq, part_offset])``. ``rows_z`` is ``zlib(msgpack([row, ...]))``, each row the
  journal's SQLite row verbatim: ``[seq, mono_s, wall_s, node_id, type, data, prev_hash,
  entry_hash]`` (``type`` as its UTF-8 bytes, ``data`` the stored canonical msgpack
  bytes). A row whose compressed form exceeds one chunk travels alone in parts:
  ``part_total`` is the length of its compressed form and ``rows_z`` the slice at
  ``part_offset`` (the pull's, repeated so a late duplicate answer to an earlier part is
  recognised); ``row_count`` is then 1. ``more`` says the device holds rows after these;
  ``head_seq`` is its newest durable seq (progress). ``status`` is :class:`ChunkStatus`
  (REFUSED, BUSY, NO_JOURNAL carry no rows).

The device's public key is not repeated: the unicast envelope around every chunk is signed
by the device and checked at every hop; the collector takes the key from it.

Decoders end in ``_untrusted`` and raise only :class:`~meshcomm.errors.DecodeError`; every
size is a named limit; decompression is bounded (:data:`MAX_ROWS_RAW_BYTES`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.journal.codec import (
    FIRST_SEQ,
    HASH_LEN,
    MAX_DATA_BYTES,
    MAX_NODE_ID_BYTES,
    MAX_SEQ,
    MAX_TYPE_BYTES,
)
from meshcomm.overlay.forwarding import MAX_MESSAGE_BYTES
from meshcomm.wire import codec, limits

COLLECT_VERSION: Final = 1
#: Rows one pull may ask for (and one chunk carry).
MAX_ROWS_PER_CHUNK: Final = 256
#: Compressed rows a device puts in one chunk (8 fragments of a unicast, with room for
#: the framing): smaller chunks interleave better with live traffic on a lossy hop.
CHUNK_TARGET_BYTES: Final = 6_500
#: Largest ``rows_z`` a collector accepts (a device may send up to one unicast message).
MAX_ROWS_Z_BYTES: Final = MAX_MESSAGE_BYTES - 512
#: Largest decompressed rows list accepted (a zlib bomb stops here).
MAX_ROWS_RAW_BYTES: Final = 1024 * 1024
#: Largest row (its msgpack form): the journal's largest data plus the other columns.
MAX_ROW_BYTES: Final = MAX_DATA_BYTES + 512
#: Largest compressed form of one row sent in parts (zlib's bound for MAX_ROW_BYTES).
MAX_PART_TOTAL: Final = MAX_ROW_BYTES + MAX_ROW_BYTES // 1000 + 64
#: Largest credential a pull carries.
MAX_CREDENTIAL_BYTES: Final = limits.MAX_CREDENTIAL_BYTES
#: A pull is small: version, numbers and a credential.
MAX_PULL_BYTES: Final = MAX_CREDENTIAL_BYTES + 64
#: zlib level: the default trades well on a Raspberry Pi.
ZLIB_LEVEL: Final = 6
_ROW_FIELDS: Final = 8


class ChunkStatus(IntEnum):
    OK = 0
    REFUSED = 1        # the collector is not authorised by this device's profile
    BUSY = 2           # the device serves other collectors now: ask again later
    NO_JOURNAL = 3     # the device keeps no journal (or cannot read it)


@dataclass(frozen=True, slots=True)
class JournalPull:
    from_seq: int
    max_rows: int
    part_offset: int = 0
    credential: bytes = b""


@dataclass(frozen=True, slots=True)
class JournalChunk:
    status: ChunkStatus
    from_seq: int
    rows_z: bytes = b""
    row_count: int = 0
    more: bool = False
    part_total: int = 0
    head_seq: int = 0
    part_offset: int = 0


#: One journal row as SQLite stores it (columns of meshcomm.journal.store.ROW_COLUMNS).
WireRow = tuple[int, float, float, bytes, bytes, bytes, bytes, bytes]


def encode_pull(pull: JournalPull) -> bytes:
    return codec.pack([COLLECT_VERSION, pull.from_seq, pull.max_rows, pull.part_offset,
                       pull.credential])


def decode_pull_untrusted(data: bytes) -> JournalPull:
    fields = codec.read_tuple(codec.unpack_untrusted(data, max_bytes=MAX_PULL_BYTES),
                              "pull", 5)
    _version(fields[0])
    return JournalPull(
        from_seq=codec.read_int(fields[1], "pull.from_seq", FIRST_SEQ, MAX_SEQ),
        max_rows=codec.read_int(fields[2], "pull.max_rows", 1, MAX_ROWS_PER_CHUNK),
        part_offset=codec.read_int(fields[3], "pull.part_offset", 0, MAX_PART_TOTAL),
        credential=codec.read_bytes(fields[4], "pull.credential",
                                    max_len=MAX_CREDENTIAL_BYTES))


def encode_chunk(chunk: JournalChunk) -> bytes:
    return codec.pack([COLLECT_VERSION, int(chunk.status), chunk.from_seq, chunk.rows_z,
                       chunk.row_count, chunk.more, chunk.part_total, chunk.head_seq,
                       chunk.part_offset])


def decode_chunk_untrusted(data: bytes) -> JournalChunk:
    fields = codec.read_tuple(codec.unpack_untrusted(data, max_bytes=MAX_MESSAGE_BYTES),
                              "chunk", 9)
    _version(fields[0])
    status_no = codec.read_int(fields[1], "chunk.status", 0, max(ChunkStatus))
    more = fields[5]
    if not isinstance(more, bool):
        raise DecodeError("chunk.more: expected a boolean")
    chunk = JournalChunk(
        status=ChunkStatus(status_no),
        from_seq=codec.read_int(fields[2], "chunk.from_seq", FIRST_SEQ, MAX_SEQ),
        rows_z=codec.read_bytes(fields[3], "chunk.rows", max_len=MAX_ROWS_Z_BYTES),
        row_count=codec.read_int(fields[4], "chunk.row_count", 0, MAX_ROWS_PER_CHUNK),
        more=more,
        part_total=codec.read_int(fields[6], "chunk.part_total", 0, MAX_PART_TOTAL),
        head_seq=codec.read_int(fields[7], "chunk.head_seq", 0, MAX_SEQ),
        part_offset=codec.read_int(fields[8], "chunk.part_offset", 0, MAX_PART_TOTAL))
    if chunk.part_total and (chunk.row_count != 1
                             or chunk.part_offset + len(chunk.rows_z) > chunk.part_total):
        raise DecodeError("chunk: a row part must be one row within its total")
    if chunk.part_offset and not chunk.part_total:
        raise DecodeError("chunk: a part offset without a part")
    if chunk.status is not ChunkStatus.OK and (chunk.rows_z or chunk.row_count):
        raise DecodeError("chunk: rows in a chunk that is not OK")
    return chunk


def _version(value: object) -> None:
    if value != COLLECT_VERSION or isinstance(value, bool):
        raise DecodeError(f"collect version {value!r} not supported", reason="version")


# --------------------------------------------------------------------------- rows
def row_to_wire(row: tuple[object, ...]) -> list[object]:
    """A row as read from SQLite (text_factory=bytes) in its wire form (type as bytes)."""
    seq, mono_s, wall_s, node_id, type_name, data, prev_hash, entry_hash = row
    if isinstance(type_name, str):
        type_name = type_name.encode("utf-8", "surrogatepass")
    return [seq, mono_s, wall_s, node_id, type_name, data, prev_hash, entry_hash]


def compress_rows(rows: list[list[object]]) -> bytes:
    return zlib.compress(codec.pack(rows), ZLIB_LEVEL)


def decompress_rows_untrusted(rows_z: bytes, row_count: int) -> list[WireRow]:
    """The rows of a chunk (or of a whole reassembled row); raises only DecodeError."""
    raw = _inflate_untrusted(rows_z)
    try:
        items = codec.read_list(codec.unpack_untrusted(raw, max_bytes=MAX_ROWS_RAW_BYTES),
                                "rows", MAX_ROWS_PER_CHUNK)
    except RecursionError:          # pragma: no cover - depth is bounded by unpack
        raise DecodeError("rows nested too deep") from None
    if len(items) != row_count:
        raise DecodeError(f"chunk says {row_count} rows, carries {len(items)}")
    return [decode_row_untrusted(item) for item in items]


def _inflate_untrusted(rows_z: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(rows_z, MAX_ROWS_RAW_BYTES + 1)
    except zlib.error as exc:
        raise DecodeError(f"rows are not zlib data: {exc}") from None
    if len(raw) > MAX_ROWS_RAW_BYTES or inflater.unconsumed_tail:
        raise DecodeError(f"rows inflate beyond {MAX_ROWS_RAW_BYTES} bytes",
                          reason="oversized")
    if not inflater.eof or inflater.unused_data:
        raise DecodeError("rows: truncated or trailing zlib data", reason="truncated")
    return raw


def decode_row_untrusted(item: object) -> WireRow:
    """The shape of one wire row (hashes are checked by the collector's chain check)."""
    fields = codec.read_tuple(item, "row", _ROW_FIELDS)
    seq = codec.read_int(fields[0], "row.seq", FIRST_SEQ, MAX_SEQ)
    mono_s = _finite(fields[1], "row.mono_s")
    wall_s = _finite(fields[2], "row.wall_s")
    node_id = codec.read_bytes(fields[3], "row.node_id", max_len=MAX_NODE_ID_BYTES)
    type_name = codec.read_bytes(fields[4], "row.type", max_len=MAX_TYPE_BYTES)
    if not node_id or not type_name:
        raise DecodeError("row: empty node id or type")
    try:
        type_name.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("row.type is not UTF-8") from None
    data = codec.read_bytes(fields[5], "row.data", max_len=MAX_DATA_BYTES)
    prev_hash = codec.read_bytes(fields[6], "row.prev_hash", exact=HASH_LEN)
    entry_hash = codec.read_bytes(fields[7], "row.entry_hash", exact=HASH_LEN)
    return (seq, mono_s, wall_s, node_id, type_name, data, prev_hash, entry_hash)


def _finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"{name}: expected a number")
    result = float(value)
    if result != result or result in (float("inf"), float("-inf")):
        raise DecodeError(f"{name}: not finite")
    return result + 0.0
