"""Safe msgpack unpacking: any bytes give a value or DecodeError; limits are enforced."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.errors import DecodeError
from meshcomm.wire import codec, limits

# Values msgpack can carry that stay inside every limit.
small_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def unpack_or_error(data: bytes, **kwargs: Any) -> object:
    try:
        return codec.unpack_untrusted(data, **kwargs)
    except DecodeError as exc:
        assert exc.reason in {"malformed", "truncated", "trailing", "oversized"}
        return exc


@settings(max_examples=1500)
@given(st.binary(max_size=limits.MAX_DATAGRAM_BYTES + 20))
def test_any_bytes_give_value_or_decode_error(data: bytes) -> None:
    unpack_or_error(data)


@settings(max_examples=500)
@given(st.binary(max_size=40), st.sampled_from(
    [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff",
     b"\xc6\xff\xff\xff\xff", b"\xc9\x00\x00\x00\x01\x05", b"\xd4\x01", b"\xd6\xff",
     b"\x91" * 40, b"\x81\x01", b"\x81\xc0\x01", b"\xc1", b"\xa3\xff\xfe\xfd"]))
def test_hostile_headers_give_value_or_decode_error(tail: bytes, head: bytes) -> None:
    unpack_or_error(head + tail)
    unpack_or_error(tail + head)


@given(small_values)
def test_round_trip(value: object) -> None:
    data = codec.pack(value)
    if len(data) <= limits.MAX_DATAGRAM_BYTES:
        assert codec.unpack_untrusted(data) == value


def test_empty_oversized_and_trailing_have_reasons() -> None:
    with pytest.raises(DecodeError) as info:
        codec.unpack_untrusted(b"")
    assert info.value.reason == "truncated"
    big = codec.pack(b"x" * limits.MAX_DATAGRAM_BYTES)
    with pytest.raises(DecodeError) as info:
        codec.unpack_untrusted(big)
    assert info.value.reason == "oversized"
    assert codec.unpack_untrusted(big, max_bytes=len(big)) == b"x" * limits.MAX_DATAGRAM_BYTES
    with pytest.raises(DecodeError) as info:
        codec.unpack_untrusted(codec.pack(1) + b"\x01")
    assert info.value.reason == "trailing"
    with pytest.raises(DecodeError) as info:
        codec.unpack_untrusted(codec.pack([1, 2, "abc"])[:-1])
    assert info.value.reason == "truncated"


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_limits_on_nesting_sizes_and_types() -> None:
    assert codec.unpack_untrusted(codec.pack(nested(limits.MAX_NESTING_DEPTH))) is not None
    too_deep = [codec.pack(nested(limits.MAX_NESTING_DEPTH + 1)),
                codec.pack({"a": nested(limits.MAX_NESTING_DEPTH)})]
    too_big = [codec.pack([0] * (limits.MAX_ARRAY_ITEMS + 1)),
               codec.pack({str(i): 0 for i in range(limits.MAX_MAP_ITEMS + 1)}),
               codec.pack("x" * (limits.MAX_STR_BYTES + 1)),
               msgpack.packb(msgpack.ExtType(1, b"x")),
               msgpack.packb({1: 2})]
    for data in too_deep + too_big:
        with pytest.raises(DecodeError):
            codec.unpack_untrusted(data)
    assert codec.unpack_untrusted(codec.pack([0] * limits.MAX_ARRAY_ITEMS)) == \
        [0] * limits.MAX_ARRAY_ITEMS


def test_field_readers_reject_wrong_types_and_ranges() -> None:
    assert codec.read_int(5, "n", 0, 10) == 5
    for bad in (True, 1.0, "1", None, -1, 11):
        with pytest.raises(DecodeError):
            codec.read_int(bad, "n", 0, 10)
    assert codec.read_float(3, "f", 0, 10) == 3.0
    for bad_f in (math.nan, math.inf, False, "1", 11.0):
        with pytest.raises(DecodeError):
            codec.read_float(bad_f, "f", 0, 10)
    with pytest.raises(DecodeError) as info:
        codec.read_str("abc", "s", 2)
    assert info.value.reason == "oversized"
    with pytest.raises(DecodeError):
        codec.read_str(b"abc", "s", 5)
    with pytest.raises(DecodeError):
        codec.read_bytes(b"abc", "b", exact=4)
    with pytest.raises(DecodeError):
        codec.read_bytes("abc", "b")
    with pytest.raises(DecodeError):
        codec.read_list([1, 2, 3], "l", 2)
    with pytest.raises(DecodeError):
        codec.read_tuple([1, 2], "t", 3)
    with pytest.raises(DecodeError):
        codec.read_str_list(["a", 1], "sl", 4, 4)
    assert codec.read_str_list(["a", "b"], "sl", 4, 4) == ("a", "b")


@given(st.binary(max_size=200))
def test_readers_on_arbitrary_unpacked_values(data: bytes) -> None:
    try:
        value = codec.unpack_untrusted(data)
    except DecodeError:
        return
    for reader in (lambda v: codec.read_int(v, "x"), lambda v: codec.read_float(v, "x", 0, 1),
                   lambda v: codec.read_str(v, "x", 8), lambda v: codec.read_bytes(v, "x"),
                   lambda v: codec.read_list(v, "x", 4), lambda v: codec.read_tuple(v, "x", 2),
                   lambda v: codec.read_str_list(v, "x", 4, 4)):
        with contextlib.suppress(DecodeError):
            reader(value)
