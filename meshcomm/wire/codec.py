"""Safe msgpack packing and unpacking plus typed field readers for untrusted data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from meshcomm.errors import DecodeError
from meshcomm.wire import limits


def pack(value: object) -> bytes:
    """Pack a value canonically (deterministic for the types we use)."""
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def _too_deep(value: list[Any] | dict[Any, Any], max_depth: int) -> bool:
    """True if any element sits deeper than ``max_depth`` (the top value is depth 0).

    Iterative and breadth-first; only containers are visited."""
    level: list[list[Any] | dict[Any, Any]] = [value]
    for depth in range(max_depth + 1):
        nxt: list[list[Any] | dict[Any, Any]] = []
        for item in level:
            children = item if type(item) is list else item.values()  # type: ignore[union-attr]
            if depth == max_depth and len(item):
                return True
            nxt.extend(x for x in children if type(x) is list or type(x) is dict)
        if not nxt:
            return False
        level = nxt
    return True


def unpack_untrusted(data: bytes, *, max_bytes: int = limits.MAX_DATAGRAM_BYTES,
                     check_depth: bool = True,
                     max_depth: int = limits.MAX_NESTING_DEPTH) -> Any:
    """Unpack msgpack bytes under hard limits; raise only DecodeError.

    ``max_depth``: the deepest nesting accepted (a value carried inside another, such as a
    frame's payload inside its envelope, is checked with the envelope's remaining depth).

    ``check_depth=False`` is for callers that validate the complete shape of the value
    with the typed readers below right away (so no deeper value is ever accepted)."""
    if len(data) > max_bytes:
        raise DecodeError(f"{len(data)} bytes exceeds the {max_bytes}-byte limit",
                          reason="oversized")
    if not data:
        raise DecodeError("empty input", reason="truncated")
    try:
        value = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True, max_str_len=limits.MAX_STR_BYTES,
            max_bin_len=max_bytes, max_array_len=limits.MAX_ARRAY_ITEMS,
            max_map_len=limits.MAX_MAP_ITEMS, max_ext_len=0,
        )
    except msgpack.ExtraData as exc:
        raise DecodeError("trailing bytes after msgpack value", reason="trailing") from exc
    except (ValueError, msgpack.UnpackException, RecursionError) as exc:
        reason = "truncated" if "incomplete" in str(exc).lower() else "malformed"
        raise DecodeError(f"bad msgpack: {exc}", reason=reason) from exc
    except Exception as exc:  # msgpack may raise other errors on hostile input
        raise DecodeError(f"bad msgpack: {type(exc).__name__}", reason="malformed") from exc
    if check_depth and (type(value) is list or type(value) is dict) and _too_deep(value, max_depth):
        raise DecodeError("nesting too deep", reason="malformed")
    return value


def read_int(value: object, name: str, lo: int = 0, hi: int = limits.MAX_SEQ) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{name}: expected an integer")
    if not lo <= value <= hi:
        raise DecodeError(f"{name}: {value} outside [{lo}, {hi}]")
    return value


def read_float(value: object, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DecodeError(f"{name}: expected a number")
    result = float(value)
    if not lo <= result <= hi:  # also rejects NaN
        raise DecodeError(f"{name}: {result} outside [{lo}, {hi}]")
    return result


def read_str(value: object, name: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"{name}: expected a string")
    if len(value) > max_len:
        raise DecodeError(f"{name}: longer than {max_len}", reason="oversized")
    return value


def read_bytes(value: object, name: str, *, exact: int | None = None,
               max_len: int = limits.MAX_BIN_BYTES) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(f"{name}: expected bytes")
    if exact is not None and len(value) != exact:
        raise DecodeError(f"{name}: expected {exact} bytes, got {len(value)}")
    if len(value) > max_len:
        raise DecodeError(f"{name}: longer than {max_len}", reason="oversized")
    return value


def read_list(value: object, name: str, max_items: int) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError(f"{name}: expected a list")
    if len(value) > max_items:
        raise DecodeError(f"{name}: more than {max_items} items", reason="oversized")
    return value


def read_tuple(value: object, name: str, length: int) -> Sequence[Any]:
    if not isinstance(value, list) or len(value) != length:
        raise DecodeError(f"{name}: expected a list of {length} items")
    return value


def read_str_list(value: object, name: str, max_items: int, max_len: int) -> tuple[str, ...]:
    return tuple(read_str(v, name, max_len) for v in read_list(value, name, max_items))
