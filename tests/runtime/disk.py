"""A real small disk for the disk-fault tests: a tmpfs mounted in a pytest tmp dir (root).

``small_disk`` mounts a tmpfs of :data:`DISK_BYTES`; :meth:`SmallDisk.fill` writes a filler
file until the kernel says ENOSPC (the disk is then really full: every later allocation
fails), :meth:`SmallDisk.free` removes it, :meth:`SmallDisk.read_only` remounts it
read-only (only possible while no file on it is open for writing). The finalizer unmounts
it (lazily if something still holds it). Under CI=true a missing root fails the test.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from tests.envcheck import require

#: Size of the test disk: room for a node's files (identity, journal, store-and-forward).
DISK_BYTES: Final = 2 * 1024 * 1024
FILLER: Final = "filler.bin"
_CHUNKS: Final = (1 << 16, 1 << 12, 1 << 9, 1)


class SmallDisk:
    def __init__(self, mount_point: Path) -> None:
        self.path = mount_point
        self._fillers = 0

    def fill(self) -> int:
        """Write filler files until the disk has no byte left; return bytes written."""
        self._fillers += 1
        total = 0
        with open(self.path / f"{FILLER}.{self._fillers}", "wb", buffering=0) as handle:
            for chunk in _CHUNKS:
                block = b"\xa5" * chunk
                while True:
                    try:
                        written = handle.write(block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    total += written or 0
        return total

    def free(self) -> None:
        for filler in self.path.glob(f"{FILLER}.*"):
            filler.unlink()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    def reformat(self, nr_inodes: int | None = None) -> None:
        """Unmount and mount a fresh, empty tmpfs here (``nr_inodes``: at most that many
        files and directories, the root included)."""
        _mount_fresh(self.path, unmount=True, nr_inodes=nr_inodes)
        self._fillers = 0

    def read_only(self) -> None:
        _mount("-o", "remount,ro", str(self.path))

    def read_write(self) -> None:
        _mount("-o", "remount,rw", str(self.path))


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def _mount_fresh(path: Path, *, unmount: bool = False, nr_inodes: int | None = None) -> None:
    if unmount:
        subprocess.run(["umount", str(path)], check=True, capture_output=True)
    options = f"size={DISK_BYTES},mode=0700"
    if nr_inodes is not None:
        options += f",nr_inodes={nr_inodes}"
    _mount("-t", "tmpfs", "-o", options, "tmpfs", str(path))


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None \
        and shutil.which("umount") is not None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    require(can_mount(), "needs root and mount(8) (a tmpfs as a small real disk)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    _mount_fresh(mount_point)
    try:
        yield SmallDisk(mount_point)
    finally:
        done = subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True,
                           check=False)
