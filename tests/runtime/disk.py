"""A real small disk for the disk-fault tests: a tmpfs mounted in a pytest tmp dir (root).

``small_disk`` mounts a tmpfs of :data:`DISK_BYTES`; :meth:`SmallDisk.fill` writes a filler
file until the kernel says ENOSPC (the disk is then really full: every later allocation
fails), :meth:`SmallDisk.free` removes it, :meth:`SmallDisk.read_only` remounts it
read-only (only possible while no file on it is open for writing). The finalizer unmounts
it (lazily if something still holds it). Under CI=true a missing root fails the test.

``ext4_disk`` is a real ext4 on a loop device that the kernel turns read-only under a
running node (:meth:`Ext4Disk.fail`): a tmpfs cannot be remounted read-only while files
on it are open for writing.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
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


#: Size of the ext4 image behind :func:`ext4_disk`.
EXT4_IMAGE_BYTES: Final = 32 * 1024 * 1024
#: How long the kernel may take to switch a failed ext4 to read-only (seconds).
READ_ONLY_WAIT_S: Final = 10.0


class Ext4Disk:
    """A real ext4 on a loop device, mounted ``errors=remount-ro``: :meth:`fail` makes the
    kernel record a file-system error and switch it to read-only under the open files
    (what an SD card with I/O errors does); :meth:`repair` fscks and mounts it again."""

    def __init__(self, image: Path, mount_point: Path) -> None:
        self.image = image
        self.path = mount_point
        self.device = ""

    def attach(self) -> None:
        done = subprocess.run(["losetup", "-f", "--show", str(self.image)], check=True,
                              capture_output=True, text=True)
        self.device = done.stdout.strip()
        _mount("-o", "errors=remount-ro", self.device, str(self.path))

    def detach(self) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True,
                          check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
        if self.device:
            subprocess.run(["losetup", "-d", self.device], capture_output=True, check=False)
            self.device = ""

    def is_read_only(self) -> bool:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[1] == str(self.path):
                options = fields[3].split(",")
                return "ro" in options or "emergency_ro" in options
        return False

    def fail(self) -> None:
        name = Path(self.device).name
        Path(f"/sys/fs/ext4/{name}/trigger_fs_error").write_text("1\n")
        deadline = time.monotonic() + READ_ONLY_WAIT_S
        while not self.is_read_only():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.path} did not turn read-only")
            time.sleep(0.01)

    def repair(self) -> None:
        self.detach()
        done = subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True,
                              text=True, check=False)
        assert done.returncode in (0, 1), done.stdout + done.stderr   # 1: errors fixed
        self.attach()


def can_loop_mount() -> bool:
    return can_mount() and all(shutil.which(tool) is not None
                               for tool in ("losetup", "mkfs.ext4", "e2fsck")) \
        and Path("/dev/loop-control").exists()


@pytest.fixture
def ext4_disk(tmp_path: Path) -> Iterator[Ext4Disk]:
    require(can_loop_mount(), "needs root, loop devices, losetup, mkfs.ext4 and e2fsck "
                              "(an ext4 that turns read-only under a running node)")
    image = tmp_path / "ext4.img"
    with open(image, "wb") as handle:
        handle.truncate(EXT4_IMAGE_BYTES)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    mount_point = tmp_path / "ext4"
    mount_point.mkdir()
    disk = Ext4Disk(image, mount_point)
    disk.attach()
    try:
        yield disk
    finally:
        disk.detach()
