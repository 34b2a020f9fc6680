from __future__ import annotations

from pathlib import Path

from tools.check_sansio import find_violations

ROOT = Path(__file__).resolve().parents[2] / "meshcomm"


def test_cores_are_sans_io() -> None:
    assert find_violations(ROOT) == []


def test_checker_catches_violations(tmp_path: Path) -> None:
    pkg = tmp_path / "overlay"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "import time\nimport random\nfrom asyncio import sleep\n"
        "x = random.random()\nr = random.Random(1)\n"
    )
    found = find_violations(tmp_path)
    assert any("imports time" in f for f in found)
    assert any("asyncio" in f for f in found)
    assert any("random.random" in f for f in found)
    assert not any("random.Random" in f for f in found)


def test_checker_refuses_sqlite3_outside_the_io_adapters(tmp_path: Path) -> None:
    # A core module importing sqlite3 even only for an exception type is reported, in
    # either import form; the same import in a named adapter (journal/store.py) is not.
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "chain.py").write_text("import sqlite3\n")
    (journal / "store.py").write_text("import sqlite3\n")
    node = tmp_path / "node"
    node.mkdir()
    (node / "core.py").write_text("from sqlite3 import OperationalError\n")
    found = find_violations(tmp_path)
    assert found == ["journal/chain.py:1: imports sqlite3",
                     "node/core.py:1: imports from sqlite3"]

