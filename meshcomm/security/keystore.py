"""On-disk keys (an IO adapter): device identity, agency keys, boot epoch.

Files are created with mode 0600 and never overwritten: losing a device key would orphan
every binding it signed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from meshcomm.errors import ConfigError
from meshcomm.security.identity import Identity

IDENTITY_FILE = "identity.key"
EPOCH_FILE = "boot-epoch"
CREDENTIAL_FILE = "credential.bin"
KEY_FILE_HEADER = "meshcomm-ed25519-seed-v1"


def _write_new_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(path: Path, identity: Identity) -> None:
    """Write a new key file; refuses to overwrite an existing one."""
    if path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite a key")
    _write_new_private(path, f"{KEY_FILE_HEADER}\n{identity.seed.hex()}\n")


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
    if len(seed) != 32:
        raise ConfigError(str(path), "key seed must be 32 bytes")
    return Identity(seed)


def ensure_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def load_or_create_identity(data_dir: Path) -> tuple[Identity, bool]:
    """Return (identity, created). Creates a new key on first start."""
    ensure_data_dir(data_dir)
    path = data_dir / IDENTITY_FILE
    if path.exists():
        return read_key_file(path), False
    identity = Identity(secrets.token_bytes(32))
    write_key_file(path, identity)
    return identity, True


def next_boot_epoch(data_dir: Path) -> int:
    """Increment and persist the boot epoch; sequence numbers start at epoch << 32."""
    path = data_dir / EPOCH_FILE
    try:
        epoch = int(path.read_text().strip()) + 1
    except FileNotFoundError:
        epoch = 1
    except ValueError as exc:
        raise ConfigError(str(path), "boot epoch file is corrupt") from exc
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{epoch}\n")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return epoch


def load_credential_bytes(data_dir: Path) -> bytes | None:
    path = data_dir / CREDENTIAL_FILE
    return path.read_bytes() if path.exists() else None
