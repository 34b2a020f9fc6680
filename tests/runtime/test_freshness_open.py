"""The freshness file at start: restored into the node's memory, and one clear line (no
traceback) when it cannot be opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshcomm.location.binding import make_binding
from meshcomm.runtime.app import FRESHNESS_FILE, StartupError, open_freshness
from meshcomm.security.identity import Identity

WALL = 1_800_000_000.0
OWN = Identity(b"o" * 32)


def test_entries_written_by_one_run_are_restored_by_the_next(tmp_path: Path) -> None:
    path = tmp_path / FRESHNESS_FILE
    memory, store = open_freshness(path, OWN.public_key, WALL)
    other = Identity(b"p" * 32)
    b = make_binding(other, incident="i", seq=41, aor="sip:p@x.y", contacts=(),
                     issued_at=WALL, lifetime_s=60)
    memory.accepted(b, WALL, credentialed=False)
    store.apply(memory.take_updates())
    store.close()
    again, store = open_freshness(path, OWN.public_key, WALL + 100)
    try:
        entry = again.get(b.record_id)
        assert entry is not None and entry.seq == 41 and entry.first_wall == WALL
    finally:
        store.close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_path_that_is_a_directory_is_a_startup_error(tmp_path: Path) -> None:
    path = tmp_path / FRESHNESS_FILE
    path.mkdir()
    with pytest.raises(StartupError, match="freshness"):
        open_freshness(path, OWN.public_key, WALL)


def test_file_that_is_not_a_database_is_a_startup_error(tmp_path: Path) -> None:
    path = tmp_path / FRESHNESS_FILE
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StartupError, match=r"freshness .*not a freshness database") as info:
        open_freshness(path, OWN.public_key, WALL)
    assert "\n" not in str(info.value)
