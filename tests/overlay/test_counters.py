"""The overlay's counters are Enum members; per-reason and per-tag counters come from
explicit tables, with the names the status output and the tests have always read."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from meshcomm.overlay.counters import (
    DROP_COUNTERS,
    MEDIA_DECODE_DROPS,
    TX_COUNTERS,
    DropReason,
    OverlayCounter,
    TxTag,
)

PKG = Path(__file__).resolve().parents[2] / "meshcomm"
#: Where the reasons the overlay drops for come from (decoders, credentials, the table).
REASON_SOURCES = ("wire", "security", "location", "overlay")
#: Functions that return a refusal reason as text.
REASON_FUNCTIONS = ("_authenticity_reason", "_reject_reason", "_make_room")


def test_every_drop_reason_has_its_counter() -> None:
    assert set(DROP_COUNTERS) == set(DropReason)
    for reason, counter in DROP_COUNTERS.items():
        assert counter == "drop_" + reason.value          # the name reported so far
    assert len(set(DROP_COUNTERS.values())) == len(DROP_COUNTERS)


def test_every_tx_tag_has_its_counter() -> None:
    assert set(TX_COUNTERS) == set(TxTag)
    for tag, counter in TX_COUNTERS.items():
        assert counter == "tx_" + tag.value
    assert len(set(TX_COUNTERS.values())) == len(TX_COUNTERS)


def test_counters_are_strings_a_reader_finds_by_name() -> None:
    from collections import Counter
    counters: Counter[str] = Counter()
    counters[OverlayCounter.DROP_BAD_SIGNATURE] += 2
    assert counters["drop_bad_signature"] == 2
    assert dict(counters) == {"drop_bad_signature": 2}


def _texts(value: ast.expr) -> Iterator[tuple[int, str]]:
    """A machine reason (``bad_sdp``, not a SIP reason phrase such as ``"Bad SDP"``) as a
    string constant, or each such constant branch of ``a if cond else b``."""
    if (isinstance(value, ast.Constant) and isinstance(value.value, str)
            and re.fullmatch(r"[a-z][a-z0-9_]*", value.value)):
        yield value.lineno, value.value
    elif isinstance(value, ast.IfExp):
        yield from _texts(value.body)
        yield from _texts(value.orelse)


def _names_reason(node: ast.keyword | ast.Assign) -> bool:
    if isinstance(node, ast.keyword):
        return node.arg == "reason"
    return any(isinstance(t, ast.Name) and t.id == "reason" for t in node.targets)


def reason_texts(path: Path) -> Iterator[tuple[int, str]]:
    """Text given as ``reason=``, assigned to ``reason`` or returned by a reason function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword | ast.Assign) and _names_reason(node):
            yield from _texts(node.value)
        elif isinstance(node, ast.FunctionDef) and node.name in REASON_FUNCTIONS:
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and ret.value is not None:
                    yield from _texts(ret.value)


def test_every_reason_a_lower_layer_gives_is_a_drop_reason() -> None:
    """DropReason.of maps text to OTHER only for text no layer below produces."""
    found: dict[str, str] = {"malformed": "errors.py (DecodeError default)",
                             "untrusted": "errors.py (TrustError default)"}
    for pkg in REASON_SOURCES:
        for path in sorted((PKG / pkg).rglob("*.py")):
            for line, text in reason_texts(path):
                found.setdefault(text, f"{path.relative_to(PKG)}:{line}")
    assert len(found) > 15                              # the scan sees the sources
    unknown = {text: where for text, where in found.items()
               if DropReason.of(text) is DropReason.OTHER}
    assert unknown == {}


def test_media_decode_reasons_map_to_media_drops() -> None:
    codec_reasons = {text for _, text in reason_texts(PKG / "wire" / "codec.py")}
    media_reasons = {text for _, text in reason_texts(PKG / "overlay" / "media.py")}
    for text in codec_reasons | media_reasons | {"malformed"}:
        assert DropReason.of(text) in MEDIA_DECODE_DROPS, text
    for reason, media in MEDIA_DECODE_DROPS.items():
        assert media.value == "media_" + reason.value


def test_unknown_reason_text_is_counted_as_other() -> None:
    assert DropReason.of("no_such_reason") is DropReason.OTHER
    assert DropReason.of("bad_signature") is DropReason.BAD_SIGNATURE
