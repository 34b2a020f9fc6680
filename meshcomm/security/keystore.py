"""On-disk keys (an IO adapter): device identity, agency keys, boot epoch, credential.

Every file here is written atomically (:func:`meshcomm.diskio.write_atomic`: temporary
file, fsync, link or rename, fsync of the directory), so a full disk, a read-only file
system or a crash leaves the old file or the new one, never a 0-byte or half-written key.

A key file is never overwritten: losing a device key would orphan every binding it
signed. The one exception is an *incomplete* key file -- empty, or a strict prefix of the
key file format (an interrupted write by an older version): it holds no key, so
:func:`load_or_create_identity` replaces it with a new identity (and logs that it did).
Anything else that does not read as a key is a :class:`ConfigError` and is left alone.
"""

from __future__ import annotations

import logging
import secrets
import stat
import string
import time
from pathlib import Path
from typing import Final

from meshcomm.diskio import remove_stale_temp_files, write_atomic
from meshcomm.errors import ConfigError
from meshcomm.security.identity import Identity

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.key"
EPOCH_FILE = "boot-epoch"
CREDENTIAL_FILE = "credential.bin"
KEY_FILE_HEADER = "meshcomm-ed25519-seed-v1"
KEY_FILE_MODE: Final = 0o600
#: A credential is not secret (it names a public key); it lives in the 0700 data dir.
CREDENTIAL_FILE_MODE: Final = 0o644
SEED_BYTES: Final = 32
#: Temporary file name older versions used for the boot epoch (removed when found).
LEGACY_EPOCH_TMP: Final = "boot-epoch.tmp"
#: When the boot epoch file is empty its value is lost; the epoch restarts above any
#: value a node can have reached by counting starts: one step per RECOVERED_EPOCH_STEP_S
#: of wall-clock time since EPOCH_CLOCK_ORIGIN_S (2020-01-01 UTC).
EPOCH_CLOCK_ORIGIN_S: Final = 1_577_836_800
RECOVERED_EPOCH_STEP_S: Final = 60
#: Sequence numbers are ``epoch << 32 | counter`` in 64 bits: the epoch must stay below.
MAX_BOOT_EPOCH: Final = (1 << 32) - 1
_HEX_DIGITS: Final = frozenset(string.hexdigits.encode())


def key_file_text(identity: Identity) -> bytes:
    return f"{KEY_FILE_HEADER}\n{identity.seed.hex()}\n".encode("ascii")


def is_incomplete_key_file(data: bytes) -> bool:
    """True if ``data`` is empty or a strict prefix of a key file (an interrupted write).

    Such a file cannot hold a key: replacing it loses nothing."""
    head = f"{KEY_FILE_HEADER}\n".encode("ascii")
    if len(data) <= len(head):
        return head.startswith(data)
    rest = data[len(head):]
    return data.startswith(head) and len(rest) < 2 * SEED_BYTES and \
        all(byte in _HEX_DIGITS for byte in rest)


def write_key_file(path: Path, identity: Identity, *, replace_incomplete: bool = False) -> None:
    """Write a new key file atomically (mode 0600).

    Refuses (FileExistsError) to overwrite an existing file, unless ``replace_incomplete``
    and the existing file is incomplete (:func:`is_incomplete_key_file`)."""
    replace = False
    if replace_incomplete:
        try:
            replace = is_incomplete_key_file(path.read_bytes())
        except FileNotFoundError:
            replace = False
    write_atomic(path, key_file_text(identity), mode=KEY_FILE_MODE, replace=replace)


def read_key_file(path: Path) -> Identity:
    try:
        lines = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read key file: {exc}") from exc
    if len(lines) != 2 or lines[0] != KEY_FILE_HEADER:
        raise ConfigError(str(path), "not a meshcomm key file")
    try:
        seed = bytes.fromhex(lines[1])
    except ValueError as exc:
        raise ConfigError(str(path), "key file holds no valid hex seed") from exc
    if len(seed) != SEED_BYTES:
        raise ConfigError(str(path), f"key seed must be {SEED_BYTES} bytes")
    return Identity(seed)


def ensure_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def load_or_create_identity(data_dir: Path) -> tuple[Identity, bool]:
    """Return (identity, created). Creates a new key on first start, or in place of an
    incomplete key file. OSError (full or read-only disk) propagates with the key path."""
    ensure_data_dir(data_dir)
    path = data_dir / IDENTITY_FILE
    remove_stale_temp_files(path)
    try:
        existing = path.read_bytes()
    except FileNotFoundError:
        existing = None
    if existing is not None and not is_incomplete_key_file(existing):
        return read_key_file(path), False
    identity = Identity(secrets.token_bytes(SEED_BYTES))
    if existing is not None:
        log.warning("%s is incomplete (%d bytes, an interrupted write): it holds no key; "
                    "creating a new identity in its place", path, len(existing))
    write_key_file(path, identity, replace_incomplete=existing is not None)
    return identity, True


def _recovered_epoch(path: Path, why: str) -> int:
    steps = int((time.time() - EPOCH_CLOCK_ORIGIN_S) // RECOVERED_EPOCH_STEP_S)
    epoch = min(max(1, steps), MAX_BOOT_EPOCH)
    log.warning("%s %s: the last boot epoch is lost; continuing at epoch %d, derived from "
                "the clock, so this node's sequence numbers stay above those it used "
                "before", path, why, epoch)
    return epoch


def next_boot_epoch(data_dir: Path, *, first_start: bool = True) -> int:
    """Increment and persist the boot epoch; sequence numbers start at epoch << 32.

    ``first_start`` False (the identity existed before this start) makes a missing epoch
    file a lost one, recovered from the clock like an empty one: restarting at epoch 1
    would put the node's new bindings below the ones its peers remember."""
    path = data_dir / EPOCH_FILE
    remove_stale_temp_files(path)
    (data_dir / LEGACY_EPOCH_TMP).unlink(missing_ok=True)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = "0" if first_start else ""
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "boot epoch file is corrupt") from exc
    if not text:
        epoch = _recovered_epoch(path, "is missing although the identity exists"
                                 if not path.exists() else "is empty (an interrupted write)")
    else:
        try:
            epoch = int(text) + 1
        except ValueError as exc:
            raise ConfigError(str(path), "boot epoch file is corrupt") from exc
    if not 1 <= epoch <= MAX_BOOT_EPOCH:
        raise ConfigError(str(path), f"boot epoch must be 1..{MAX_BOOT_EPOCH}")
    write_atomic(path, f"{epoch}\n".encode("ascii"), mode=KEY_FILE_MODE, replace=True)
    return epoch


def write_credential_file(path: Path, data: bytes) -> None:
    """Write (or replace) a credential file atomically."""
    write_atomic(path, data, mode=CREDENTIAL_FILE_MODE, replace=True)


def load_credential_bytes(data_dir: Path) -> bytes | None:
    """The device credential, or None when there is none (an empty file counts as none)."""
    path = data_dir / CREDENTIAL_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data:
        log.warning("%s is empty (an interrupted write): running without a credential; "
                    "enroll the device again", path)
        return None
    return data


def read_secret_file(path: Path, key: str, min_bytes: int, max_bytes: int) -> bytes:
    """The secret in ``path``, surrounding whitespace stripped. ConfigError naming the
    config ``key`` when the file cannot be read or the secret is not ``min_bytes`` ..
    ``max_bytes`` long; a file others may read is warned about (the secret never logged)."""
    try:
        info = path.stat()
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s %s is readable by others (chmod 600 it)", key, path)
    secret = raw.strip()
    if not min_bytes <= len(secret) <= max_bytes:
        raise ConfigError(key, f"{str(path)!r} must hold {min_bytes}..{max_bytes} bytes "
                               f"(it holds {len(secret)})")
    return secret
