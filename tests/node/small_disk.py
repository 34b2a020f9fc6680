"""A small real disk for fault tests: a tmpfs mounted in a temporary directory (root),
that a test fills to ENOSPC and frees again. Without root the test is skipped (CI runs as
root, where a failed mount is an error, not a skip)."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: Size of the test file system: room for a store-and-forward database, little more.
SMALL_DISK_BYTES = 1 << 20
FILL_CHUNK_BYTES = 4096


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler"

    def fill(self) -> None:
        """Write until the file system reports ENOSPC (it is then full)."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (FILL_CHUNK_BYTES, 1):          # pages, then the last bytes
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)


@contextmanager
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_BYTES}", "tmpfs",
                    str(mount)], check=True)
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def read_only_connection(path: Path) -> sqlite3.Connection:
    """The database opened read-only by SQLite, as a read-only file or medium gives it:
    every write fails with SQLITE_READONLY."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
