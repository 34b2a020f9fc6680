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
