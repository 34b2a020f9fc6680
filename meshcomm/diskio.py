"""Small durable files and disk-error wording (an IO adapter).

:func:`write_atomic` writes a whole file so that a crash, a full disk or a read-only file
system leaves either the old file or the new one, never a 0-byte or half-written file:
a temporary file in the same directory (``.NAME.<random>.tmp``), write, fsync, then a
hard link to the final name (``replace=False``: an existing file is never overwritten,
the link fails with FileExistsError) or ``os.replace`` (``replace=True``), then an fsync of
the directory. On any failure the temporary file is removed and an ``OSError`` naming the
final path is raised.

:func:`disk_problem` turns an ``OSError`` or ``sqlite3.Error`` into one line for a person
("no space left on device writing /x/identity.key", "data dir /x is read-only").
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Final

#: Random hex digits in a temporary file's name.
TMP_NAME_HEX_CHARS: Final = 12
TMP_SUFFIX: Final = ".tmp"
#: errnos meaning "the file system refuses hard links" (e.g. vfat on an SD card).
_NO_LINK_ERRNOS: Final = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP,
                                    errno.EMLINK, errno.EXDEV})
#: errnos an fsync of a directory may give on file systems that do not support it.
_NO_DIR_FSYNC_ERRNOS: Final = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP,
                                         errno.EBADF})


def temp_name_glob(name: str) -> str:
    """Glob of the temporary files :func:`write_atomic` may leave for ``name``."""
    return f".{name}.*{TMP_SUFFIX}"


def remove_stale_temp_files(path: Path) -> int:
    """Remove temporary files a crashed :func:`write_atomic` of ``path`` left behind.

    Safe: a temporary file never became the file (the link or rename is the last step).
    Returns how many were removed."""
    removed = 0
    for stale in path.parent.glob(temp_name_glob(path.name)):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed += 1
    return removed


def fsync_dir(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable (no-op where unsupported)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC_ERRNOS:
            raise
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _publish(tmp: Path, path: Path, *, replace: bool) -> None:
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
        # No hard links here: rename, after checking (not atomically) that path is free.
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) \
                from None
        os.rename(tmp, path)
        return
    os.unlink(tmp)


def write_atomic(path: Path, data: bytes, *, mode: int, replace: bool) -> None:
    """Write ``data`` to ``path`` atomically and durably (see the module docstring).

    Raises FileExistsError if ``replace`` is false and ``path`` exists; any other OSError
    carries ``path`` (not the temporary name) as its filename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(TMP_NAME_HEX_CHARS // 2)}"
                         f"{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        _publish(tmp, path, replace=replace)
        fsync_dir(path.parent)
    except FileExistsError:
        _remove_quietly(tmp)
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
    except OSError as exc:
        _remove_quietly(tmp)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def _remove_quietly(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


# --------------------------------------------------------------------------- wording
#: How each errno reads, given the path and what was being done ("writing", "creating").
_ERRNO_WORDS: Final = {
    errno.ENOSPC: "no space left on device {doing} {path}",
    errno.EDQUOT: "disk quota exceeded {doing} {path}",
    errno.EROFS: "read-only file system: cannot {verb} {path}",
    errno.EACCES: "permission denied {doing} {path}",
    errno.EPERM: "operation not permitted {doing} {path}",
    errno.EIO: "I/O error {doing} {path}",
    errno.ENOTDIR: "{path}: a parent is not a directory",
    errno.EISDIR: "{path} is a directory",
    errno.EMFILE: "too many open files {doing} {path}",
}
#: SQLite primary result codes (``sqlite_errorcode & 0xff``) and how they read.
_SQLITE_WORDS: Final = {
    13: "no space left on device writing {path}",           # SQLITE_FULL
    8: "read-only file system: cannot write {path}",         # SQLITE_READONLY
    10: "I/O error {doing} {path}",                          # SQLITE_IOERR
    14: "cannot open {path}",                                # SQLITE_CANTOPEN
    23: "permission denied {doing} {path}",                  # SQLITE_AUTH
    3: "permission denied {doing} {path}",                   # SQLITE_PERM
    26: "{path} is not an SQLite database",                  # SQLITE_NOTADB
    11: "{path} is damaged (database disk image is malformed)",  # SQLITE_CORRUPT
}
#: Extended SQLite result codes worded more precisely than their primary code.
_SQLITE_EXTENDED_WORDS: Final = {
    # SQLITE_IOERR_SHMSIZE: the -shm file could not grow (SQLite: "typically disk full")
    4874: "no space left on device writing {path} (its -shm file cannot grow)",
}
#: SQLITE_IOERR and SQLITE_CANTOPEN: worded from the file system's state when it explains
#: them (read-only, no free inodes, nearly full).
_SQLITE_VAGUE: Final = frozenset({10, 14})
#: A file system with less free space than this is taken as full when SQLite reports a
#: vague error.
NEARLY_FULL_BYTES: Final = 64 * 1024
_VERBS: Final = {"writing": "write", "creating": "create", "opening": "open",
                 "reading": "read", "locking": "lock"}


def disk_problem(exc: OSError | sqlite3.Error, path: Path | str, doing: str = "writing") \
        -> str:
    """One line naming ``path`` and what went wrong (no traceback, no errno numbers)."""
    verb = _VERBS.get(doing, doing)
    if isinstance(exc, OSError):
        template = _ERRNO_WORDS.get(exc.errno or 0)
        if template is None:
            return f"cannot {verb} {path}: {exc.strerror or exc}"
        return template.format(doing=doing, verb=verb, path=path)
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return f"cannot {verb} {path}: {exc}"
    template = _SQLITE_EXTENDED_WORDS.get(code) or _SQLITE_WORDS.get(code & 0xFF)
    if code & 0xFF in _SQLITE_VAGUE:
        template = _file_system_state(Path(path)) or template
    if template is None:
        return f"cannot {verb} {path}: {exc}"
    return template.format(doing=doing, verb=verb, path=path)


def _file_system_state(path: Path) -> str | None:
    """What the file system holding ``path`` says when SQLite's error is vague (it maps
    some ENOSPC and EROFS failures to SQLITE_IOERR_* or SQLITE_CANTOPEN)."""
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return None
    if stat.f_flag & os.ST_RDONLY:
        return "read-only file system: cannot write {path}"
    if stat.f_files > 0 and stat.f_favail == 0:
        return "no space left on device (no free inodes) {doing} {path}"
    if stat.f_bavail * stat.f_frsize < NEARLY_FULL_BYTES:
        return "no space left on device {doing} {path}"
    if _refuses_new_files(path.parent) == errno.EROFS:
        # e.g. ext4 after an error (errors=remount-ro): statvfs may still say read-write
        return "read-only file system: cannot write {path}"
    return None


def _refuses_new_files(directory: Path) -> int | None:
    """Probe: the errno with which ``directory`` refuses a new empty file (None: it
    takes one; the probe file is removed at once)."""
    probe = directory / f".meshcomm-probe-{secrets.token_hex(TMP_NAME_HEX_CHARS // 2)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc.errno
    os.close(fd)
    _remove_quietly(probe)
    return None


def is_read_only(exc: OSError | sqlite3.Error) -> bool:
    """True if ``exc`` says the file system (or the database) is read-only."""
    if isinstance(exc, OSError):
        return exc.errno == errno.EROFS
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == 8
