"""tools/check_counters: no counter name is built from strings; named ones are Enum
members."""

from __future__ import annotations

from pathlib import Path

from tools.check_counters import find_violations

ROOT = Path(__file__).resolve().parents[2] / "meshcomm"


def test_meshcomm_counters_are_named_by_enums() -> None:
    assert find_violations(ROOT) == []


def test_no_fstring_counter_remains_in_the_tree() -> None:
    """The plain text search the issue asks for, beside the AST check."""
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in sorted(ROOT.rglob("*.py"))
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if 'counters[f"' in line or "counters[f'" in line]
    assert hits == []


def test_checker_refuses_built_and_literal_names(tmp_path: Path) -> None:
    pkg = tmp_path / "overlay"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "self.counters[f'drop_{reason}'] += 1\n"
        "counters['tx_' + tag] += 1\n"
        "self._counters['sf_drop_%s' % reason] += 1\n"
        "x = self.counters.get('drop_{}'.format(r), 0)\n"
        "self.counters['tx_bytes'] += 1\n"
        "self.counters[OverlayCounter.TX_BYTES] += 1\n"
        "self.counters[DROP_COUNTERS[reason]] += 1\n"
        "other['x'] += 1\n"
        "self.count(f'rejected_{status}')\n"
        "self.count(UaCounter.BAD_PIDF)\n"
        "n = data.count('x')\n"
    )
    assert find_violations(tmp_path) == [
        "overlay/bad.py:1: counter name built from strings",
        "overlay/bad.py:2: counter name built from strings",
        "overlay/bad.py:3: counter name built from strings",
        "overlay/bad.py:4: counter name built from strings",
        "overlay/bad.py:5: counter named by the string 'tx_bytes'",
        "overlay/bad.py:9: counter name built from strings",
    ]
