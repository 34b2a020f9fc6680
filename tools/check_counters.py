"""Check that counters are named by Enum members, never built from strings.

A counter is reached as ``<something>.counters[...]`` (or ``counters[...]``,
``_counters[...]``). Its index must not be

* an f-string (``counters[f"drop_{reason}"]``), a ``%``/``+`` string expression or a
  ``.format`` call: a per-reason counter is looked up in an explicit table keyed by the
  reason's Enum (``DROP_COUNTERS[reason]``), so a renamed reason fails a test instead of
  silently starting a new counter;
* a string literal (``counters["tx_bytes"]``): the name is a member of the area's counter
  Enum (``OverlayCounter.TX_BYTES``), so a typo fails mypy.

The same holds for ``counters.get(...)`` and for ``self.count(...)`` (the SIP user
agent's counting method).

Run: ``python -m tools.check_counters`` (exit 1 and one line per violation).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

COUNTER_NAMES = frozenset({"counters", "_counters"})


def _is_counters(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in COUNTER_NAMES
    return isinstance(node, ast.Attribute) and node.attr in COUNTER_NAMES


def _stringy(node: ast.expr) -> bool:
    """Whether ``node`` is text or text put together (f-string, ``+``, ``%``, format)."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return _stringy(node.left) or _stringy(node.right)
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format")


def _built(index: ast.expr) -> bool:
    """Whether ``index`` builds a name out of strings (a plain literal is not built)."""
    return not isinstance(index, ast.Constant) and _stringy(index)


def _indexes(tree: ast.AST) -> Iterator[ast.expr]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_counters(node.value):
            yield node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            func = node.func
            if ((func.attr == "get" and _is_counters(func.value))
                    or (func.attr == "count" and isinstance(func.value, ast.Name)
                        and func.value.id == "self")):
                yield node.args[0]


def _violations_in(path: Path, rel: str) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for index in _indexes(tree):
        if _built(index):
            yield f"{rel}:{index.lineno}: counter name built from strings"
        elif isinstance(index, ast.Constant) and isinstance(index.value, str):
            yield f"{rel}:{index.lineno}: counter named by the string {index.value!r}"


def find_violations(package_root: Path) -> list[str]:
    return [problem for path in sorted(package_root.rglob("*.py"))
            for problem in _violations_in(path, path.relative_to(package_root).as_posix())]


if __name__ == "__main__":
    problems = find_violations(Path(__file__).resolve().parent.parent / "meshcomm")
    sys.stdout.write("".join(f"{line}\n" for line in problems))
    sys.exit(1 if problems else 0)
