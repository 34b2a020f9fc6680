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
    KEY_FILE_HEADER,
    is_incomplete_key_file,
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


# An empty file is not in this list any more: it holds no key and is replaced (below).
@pytest.mark.parametrize("text", ["garbage\n", "meshcomm-ed25519-seed-v1\nzz\n",
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


GOOD_SEED = bytes(range(32))
GOOD_TEXT = f"{KEY_FILE_HEADER}\n{GOOD_SEED.hex()}\n"


@pytest.mark.parametrize("cut", [0, 1, 10, len(KEY_FILE_HEADER), len(KEY_FILE_HEADER) + 1,
                                 len(KEY_FILE_HEADER) + 2, len(KEY_FILE_HEADER) + 40,
                                 len(KEY_FILE_HEADER) + 64])
def test_incomplete_identity_file_is_replaced_by_a_new_identity(tmp_path: Path,
                                                                cut: int) -> None:
    # What an interrupted write of an older version left: a strict prefix of a key file.
    (tmp_path / IDENTITY_FILE).write_text(GOOD_TEXT[:cut])
    assert is_incomplete_key_file(GOOD_TEXT[:cut].encode())
    ident, created = load_or_create_identity(tmp_path)
    assert created
    assert mode_of(tmp_path / IDENTITY_FILE) == 0o600
    assert read_key_file(tmp_path / IDENTITY_FILE).public_key == ident.public_key
    again, created_again = load_or_create_identity(tmp_path)
    assert not created_again and again.public_key == ident.public_key


@pytest.mark.parametrize("text", [GOOD_TEXT, GOOD_TEXT.rstrip("\n"), GOOD_TEXT + "\n",
                                  GOOD_TEXT.replace("\n", "\r\n")])
def test_complete_key_files_are_kept(tmp_path: Path, text: str) -> None:
    assert not is_incomplete_key_file(text.encode())
    (tmp_path / IDENTITY_FILE).write_bytes(text.encode())
    ident, created = load_or_create_identity(tmp_path)
    assert not created and ident.seed == GOOD_SEED
    assert (tmp_path / IDENTITY_FILE).read_bytes() == text.encode()


@pytest.mark.parametrize("data", [b"x", b"meshcomm-ed25519-seed-v2", GOOD_TEXT[:40].encode()
                                  + b"g", b"\x00" * 10, GOOD_TEXT.encode()[:-1] + b"0\n"])
def test_other_damage_is_not_mistaken_for_an_interrupted_write(data: bytes) -> None:
    assert not is_incomplete_key_file(data)


def test_write_key_file_replaces_only_incomplete_files(tmp_path: Path) -> None:
    path = tmp_path / "agency.key"
    write_key_file(path, Identity(GOOD_SEED), replace_incomplete=True)
    with pytest.raises(FileExistsError):
        write_key_file(path, Identity(bytes(32)), replace_incomplete=True)
    assert read_key_file(path).seed == GOOD_SEED
    path.write_text(GOOD_TEXT[:30])
    with pytest.raises(FileExistsError):
        write_key_file(path, Identity(bytes(32)))  # without the flag: never
    write_key_file(path, Identity(bytes(32)), replace_incomplete=True)
    assert read_key_file(path).seed == bytes(32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agency.key"]  # no temp files


def test_leftover_temporary_files_never_become_the_key(tmp_path: Path) -> None:
    # A crash between writing the temporary file and linking it leaves only the temp file.
    stale = tmp_path / f".{IDENTITY_FILE}.0123456789ab.tmp"
    stale.write_text(GOOD_TEXT)
    epoch_stale = tmp_path / f".{EPOCH_FILE}.0123456789ab.tmp"
    epoch_stale.write_text("77\n")
    (tmp_path / "boot-epoch.tmp").write_text("5\n")   # an older version's temp name
    ident, created = load_or_create_identity(tmp_path)
    assert created and ident.seed != GOOD_SEED
    assert next_boot_epoch(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [EPOCH_FILE, IDENTITY_FILE]


def test_empty_boot_epoch_continues_above_any_counted_epoch(tmp_path: Path) -> None:
    (tmp_path / EPOCH_FILE).write_text("")
    recovered = next_boot_epoch(tmp_path)
    # one step per minute since 2020: far above what counting restarts reaches
    assert recovered > 3_000_000
    assert next_boot_epoch(tmp_path) == recovered + 1
    assert (recovered + 1) << 32 < 1 << 64


def test_empty_credential_counts_as_none(tmp_path: Path) -> None:
    (tmp_path / CREDENTIAL_FILE).write_bytes(b"")
    assert load_credential_bytes(tmp_path) is None


def test_key_files_are_written_whole_and_synced(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_key_file(path, Identity(GOOD_SEED))
    assert path.read_text() == GOOD_TEXT
    assert path.stat().st_nlink == 1      # the temporary name is gone
    assert next_boot_epoch(tmp_path) == 1
    assert mode_of(tmp_path / EPOCH_FILE) == 0o600


def test_missing_boot_epoch_of_an_existing_identity_is_recovered(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    assert next_boot_epoch(tmp_path, first_start=True) == 1
    assert next_boot_epoch(tmp_path, first_start=False) == 2     # present: just counted
    (tmp_path / EPOCH_FILE).unlink()                            # lost (deleted, old crash)
    recovered = next_boot_epoch(tmp_path, first_start=False)
    assert recovered > 3_000_000
    assert next_boot_epoch(tmp_path, first_start=False) == recovered + 1
