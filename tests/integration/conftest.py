"""Fixtures of the real-process tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.envcheck import require_root
from tools.testbed import Testbed, chain


@pytest.fixture
def chain3(tmp_path: Path) -> Iterator[Testbed]:
    """``chain(3)`` (alice - relay - bob in the store-and-forward tests), its data dirs and
    logs under ``tmp_path``; needs root."""
    require_root()
    with chain(3) as bed:
        bed.use_workdir(tmp_path)
        yield bed


@pytest.fixture
def chain2(tmp_path: Path) -> Iterator[Testbed]:
    """``chain(2)``, data dirs and logs under ``tmp_path``; needs root."""
    require_root()
    with chain(2) as bed:
        bed.use_workdir(tmp_path)
        yield bed
