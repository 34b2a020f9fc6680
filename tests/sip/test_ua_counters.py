"""The user agent's counters are UaCounter members; per-reason and per-status counters
come from explicit tables, with the names reported so far."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from meshcomm.sip.counters import (
    ANSWERED_UNDECODABLE_COUNTERS,
    REJECTED_COUNTERS,
    UNDECODABLE_COUNTERS,
    SipDecodeReason,
    UaCounter,
)
from meshcomm.sip.salvage import ANSWER_STATUSES
from tests.overlay.test_counters import reason_texts

SIP = Path(__file__).resolve().parents[2] / "meshcomm" / "sip"
#: Functions whose return value is the status a request is rejected with.
STATUS_FUNCTIONS = ("_precheck", "_dialog_check", "_body_check", "check_request")


def test_every_reason_and_status_has_its_counter() -> None:
    assert set(UNDECODABLE_COUNTERS) == set(SipDecodeReason)
    assert all(c == "undecodable_" + r.value for r, c in UNDECODABLE_COUNTERS.items())
    assert set(ANSWERED_UNDECODABLE_COUNTERS) == set(ANSWER_STATUSES)
    assert all(c == f"answered_undecodable_{s}" for s, c in ANSWERED_UNDECODABLE_COUNTERS.items())
    assert all(c == f"rejected_{s}" for s, c in REJECTED_COUNTERS.items())
    used = [*UNDECODABLE_COUNTERS.values(), *ANSWERED_UNDECODABLE_COUNTERS.values(),
            *REJECTED_COUNTERS.values()]
    assert len(set(used)) == len(used)
    assert len(UaCounter.__members__) == len(UaCounter)


def test_every_reason_the_sip_parser_gives_is_a_decode_reason() -> None:
    found = {"malformed"} | {text for path in sorted(SIP.glob("*.py"))
                             for _, text in reason_texts(path)}
    assert {"framing", "truncated", "version", "range"} <= found
    assert {t for t in found if SipDecodeReason.of(t) is SipDecodeReason.OTHER} == set()
    assert SipDecodeReason.of("no_such_reason") is SipDecodeReason.OTHER


def _statuses(node: ast.AST | None) -> Iterator[int]:
    """SIP error statuses written as constants in ``node``."""
    for sub in ast.walk(node) if node is not None else ():
        if isinstance(sub, ast.Constant) and type(sub.value) is int and 400 <= sub.value < 700:
            yield sub.value


def _rejection_statuses(path: Path) -> Iterator[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in STATUS_FUNCTIONS:
            yield from _statuses(node)               # returned, or assigned and returned
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "reject_request" and len(node.args) >= 3):
            yield from _statuses(node.args[2])
        elif isinstance(node, ast.keyword) and node.arg == "status_hint":
            yield from _statuses(node.value)         # a parser's status, rejected with


def test_every_status_the_ua_rejects_with_has_its_counter() -> None:
    found = {s for path in sorted(SIP.glob("*.py")) for s in _rejection_statuses(path)}
    assert {400, 405, 416, 420, 481, 483, 500, 501, 505} <= found   # the scan sees them
    assert found - set(REJECTED_COUNTERS) == set()
