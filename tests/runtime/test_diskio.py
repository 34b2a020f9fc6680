"""meshcomm.diskio: atomic durable writes and the one-line wording of disk errors."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from meshcomm.diskio import disk_problem, is_read_only, remove_stale_temp_files, write_atomic
from tests.runtime.disk import SmallDisk


def test_write_atomic_new_and_replace(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_atomic(path, b"one", mode=0o600, replace=False)
    assert path.read_bytes() == b"one" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError) as refused:
        write_atomic(path, b"two", mode=0o600, replace=False)
    assert refused.value.filename == str(path)
    assert path.read_bytes() == b"one"
    write_atomic(path, b"three", mode=0o644, replace=True)
    assert path.read_bytes() == b"three" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_failed_write_keeps_the_old_file_and_no_temp(small_disk: SmallDisk) -> None:
    path = small_disk.path / "epoch"
    write_atomic(path, b"7\n", mode=0o600, replace=True)
    small_disk.fill()
    with pytest.raises(OSError) as failed:
        write_atomic(path, b"8\n" * 5000, mode=0o600, replace=True)
    assert failed.value.errno == errno.ENOSPC and failed.value.filename == str(path)
    assert disk_problem(failed.value, path) == f"no space left on device writing {path}"
    assert path.read_bytes() == b"7\n"
    assert sorted(p.name for p in small_disk.path.iterdir()
                  if not p.name.startswith("filler")) == ["epoch"]


def test_stale_temp_files_are_removed_and_only_ours(tmp_path: Path) -> None:
    (tmp_path / ".identity.key.abcdef012345.tmp").write_text("x")
    (tmp_path / ".other.key.abcdef012345.tmp").write_text("x")
    (tmp_path / "identity.key").write_text("kept")
    assert remove_stale_temp_files(tmp_path / "identity.key") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.key.abcdef012345.tmp",
                                                          "identity.key"]


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOSPC, "no space left on device writing /x/f"),
    (errno.EROFS, "read-only file system: cannot write /x/f"),
    (errno.EACCES, "permission denied writing /x/f"),
    (errno.EIO, "I/O error writing /x/f"),
    (errno.ENOENT, "cannot write /x/f: No such file or directory"),
])
def test_os_errors_read_as_one_line(code: int, words: str) -> None:
    exc = OSError(code, os.strerror(code), "/x/f.tmp")
    assert disk_problem(exc, "/x/f") == words
    assert is_read_only(exc) is (code == errno.EROFS)


def test_sqlite_errors_read_as_one_line(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    path.write_bytes(b"not a database" * 100)
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        conn.execute("SELECT * FROM sqlite_master").fetchall()
    conn.close()
    assert disk_problem(caught.value, path) == f"{path} is not an SQLite database"


def test_sqlite_on_a_read_only_disk_reads_as_read_only(small_disk: SmallDisk) -> None:
    path = small_disk.path / "db.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    small_disk.read_only()
    try:
        conn = sqlite3.connect(path)
        try:
            with pytest.raises(sqlite3.Error) as caught:
                conn.execute("INSERT INTO t VALUES (1)")
                conn.commit()
        finally:
            conn.close()
    finally:
        small_disk.read_write()
    assert is_read_only(caught.value)
    assert disk_problem(caught.value, path) == f"read-only file system: cannot write {path}"
