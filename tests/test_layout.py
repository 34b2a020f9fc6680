"""The layout of the test tree: every module pytest collects as a test module (``test_*.py``)
holds at least one test. Harnesses, nets, edges and helpers live in modules with other
names (``tests/node/gateway_net.py``, ``tests/node/memory_edge.py``...), so a module's name
says what it is (issue 9, item 6)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def holds_a_test(source: str) -> bool:
    """True if pytest (default naming) would collect a test from this module's source:
    a module-level ``test*`` function, or a ``test*`` method of a ``Test*`` class."""
    def is_test(node: ast.stmt) -> bool:
        return (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name.startswith("test"))

    return any(is_test(node) or (isinstance(node, ast.ClassDef)
                                 and node.name.startswith("Test")
                                 and any(is_test(item) for item in node.body))
               for node in ast.parse(source).body)


def collected_modules(root: Path = TESTS) -> list[Path]:
    return sorted(p for p in root.rglob("*.py")
                  if p.name.startswith("test_") or p.name.endswith("_test.py"))


def test_every_test_module_holds_a_test() -> None:
    empty = [str(p.relative_to(TESTS.parent)) for p in collected_modules()
             if not holds_a_test(p.read_text(encoding="utf-8"))]
    assert empty == [], f"test modules without a test (rename them): {empty}"


def test_the_check_tells_helpers_from_tests(tmp_path: Path) -> None:
    (tmp_path / "test_helpers_only.py").write_text(
        "class Net:\n    def step(self) -> None: ...\n\n"
        "def registered() -> None: ...\n\n"
        "class TestLike:\n    def helper(self) -> None: ...\n")
    (tmp_path / "test_in_class.py").write_text(
        "class TestThing:\n    async def test_it(self) -> None: ...\n")
    (tmp_path / "test_plain.py").write_text("def test_it() -> None:\n    assert True\n")
    (tmp_path / "helpers.py").write_text("def test_like() -> None: ...\n")
    found = {p.name: holds_a_test(p.read_text()) for p in collected_modules(tmp_path)}
    assert found == {"test_helpers_only.py": False, "test_in_class.py": True,
                     "test_plain.py": True}
