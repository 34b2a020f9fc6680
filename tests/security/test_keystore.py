from __future__ import annotations

import stat
from pathlib import Path

import pytest

from meshcomm.errors import ConfigError
from meshcomm.security.identity import Identity, node_id_of
from meshcomm.security.keystore import (
    CREDENTIAL_FILE,
    EPOCH_FILE,
    IDENTITY_FILE,
    load_credential_bytes,
    load_or_create_identity,
    next_boot_epoch,
    read_key_file,
    write_key_file,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identity_created_once_with_mode_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    ident, created = load_or_create_identity(data_dir)
    assert created
    assert mode_of(data_dir) == 0o700
    key_file = data_dir / IDENTITY_FILE
    assert mode_of(key_file) == 0o600
    content = key_file.read_bytes()
    again, created_again = load_or_create_identity(data_dir)
    assert not created_again
    assert again.public_key == ident.public_key
    assert again.node_id == node_id_of(ident.public_key)
    assert key_file.read_bytes() == content


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_key_file(path, Identity(bytes(32)))
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_key_file(path, Identity(bytes(range(32))))
    assert path.read_bytes() == before
    assert read_key_file(path).public_key == Identity(bytes(32)).public_key


@pytest.mark.parametrize("text", ["", "garbage\n", "meshcomm-ed25519-seed-v1\nzz\n",
                                  "meshcomm-ed25519-seed-v1\nabcd\n",
                                  "other-header\n" + "00" * 32 + "\n"])
def test_corrupt_key_files_are_config_errors_and_not_replaced(tmp_path: Path,
                                                              text: str) -> None:
    (tmp_path / IDENTITY_FILE).write_text(text)
    with pytest.raises(ConfigError):
        load_or_create_identity(tmp_path)
    assert (tmp_path / IDENTITY_FILE).read_text() == text
    (tmp_path / "bin.key").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError):
        read_key_file(tmp_path / "bin.key")
    with pytest.raises(ConfigError):
        read_key_file(tmp_path / "absent.key")


def test_boot_epoch_increments_and_persists(tmp_path: Path) -> None:
    assert [next_boot_epoch(tmp_path) for _ in range(3)] == [1, 2, 3]
    assert (tmp_path / EPOCH_FILE).read_text().strip() == "3"
    assert next_boot_epoch(tmp_path) == 4
    (tmp_path / EPOCH_FILE).write_text("x\n")
    with pytest.raises(ConfigError):
        next_boot_epoch(tmp_path)


def test_credential_bytes_absent_or_present(tmp_path: Path) -> None:
    assert load_credential_bytes(tmp_path) is None
    (tmp_path / CREDENTIAL_FILE).write_bytes(b"abc")
    assert load_credential_bytes(tmp_path) == b"abc"
