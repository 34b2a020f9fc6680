from __future__ import annotations

import argparse
import stat
import time
from pathlib import Path

import pytest

from meshcomm.cli import keys_cmd
from meshcomm.cli.keys_cmd import UsageError, check_aor_pattern, parse_duration_s
from meshcomm.errors import TrustError
from meshcomm.location.binding import make_binding
from meshcomm.location.table import LocationTable, MergeOutcome, TrustMode, TrustPolicy
from meshcomm.security.credentials import (
    aor_matches,
    check_credential,
    decode_credential_untrusted,
)
from meshcomm.security.identity import Identity
from meshcomm.security.keystore import (
    CREDENTIAL_FILE,
    load_credential_bytes,
    load_or_create_identity,
    read_key_file,
)
from meshcomm.security.verify import SignatureVerifier
from tests.runtime.disk import SmallDisk


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="meshcomm")
    keys_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status


@pytest.fixture
def agency_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, bytes]:
    path = tmp_path / "agency.key"
    assert run(["keygen", "--out", str(path)]) == 0
    public = bytes.fromhex(capsys.readouterr().out.strip())
    return path, public


def test_keygen_writes_private_file_and_prints_public_key(
        agency_key: tuple[Path, bytes]) -> None:
    path, public = agency_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path).public_key == public


def test_keygen_refuses_to_overwrite(agency_key: tuple[Path, bytes],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = agency_key
    before = path.read_bytes()
    assert run(["keygen", "--out", str(path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_keygen_unwritable_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["keygen", "--out", str(tmp_path / "no" / "such" / "dir.key")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_enroll_with_data_dir_writes_credential_a_table_accepts(
        tmp_path: Path, agency_key: tuple[Path, bytes],
        capsys: pytest.CaptureFixture[str]) -> None:
    key_path, agency_public = agency_key
    data_dir = tmp_path / "device"
    device, _ = load_or_create_identity(data_dir)
    before = int(time.time())
    assert run(["enroll", "--agency-key", str(key_path), "--aor", "sip:*@fire.example",
                "--role", "medic", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert f"credential written: {data_dir / CREDENTIAL_FILE}" in out
    assert device.public_key.hex() in out and "medic" in out
    raw = load_credential_bytes(data_dir)
    assert raw is not None
    cred = decode_credential_untrusted(raw)
    assert cred.agency_key == agency_public and cred.device_key == device.public_key
    assert cred.aor_pattern == "sip:*@fire.example" and cred.role == "medic"
    assert before <= cred.issued_at <= int(time.time())
    assert cred.expires_at - cred.issued_at == 30 * 86400
    check_credential(cred, trusted_agency_keys=frozenset({agency_public}),
                     device_key=device.public_key, aor="sip:medic-7@fire.example",
                     wall_time_s=cred.issued_at + 1)
    # A binding carrying it is accepted under the agency policy.
    table = LocationTable("inc", TrustPolicy(TrustMode.AGENCY, frozenset({agency_public})),
                          SignatureVerifier())
    binding = make_binding(device, incident="inc", seq=1, aor="sip:medic-7@fire.example",
                           contacts=(), issued_at=cred.issued_at, lifetime_s=60,
                           credential=raw)
    assert table.offer(binding, 0.0, cred.issued_at + 1).outcome is MergeOutcome.NEW


def test_enroll_device_key_out_and_expiry(tmp_path: Path, agency_key: tuple[Path, bytes],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    key_path, _ = agency_key
    device = Identity(bytes(range(32)))
    out = tmp_path / "medic.cred"
    argv = ["enroll", "--agency-key", str(key_path), "--aor", "sip:ems-1@fire.example",
            "--role", "ems", "--device-key", device.public_key.hex(), "--expires", "12h",
            "--out", str(out)]
    assert run(argv) == 0
    cred = decode_credential_untrusted(out.read_bytes())
    assert cred.expires_at - cred.issued_at == 12 * 3600
    with pytest.raises(TrustError, match=r"does not cover"):
        check_credential(cred, trusted_agency_keys=frozenset({cred.agency_key}),
                         device_key=device.public_key, aor="sip:ems-2@fire.example",
                         wall_time_s=cred.issued_at)
    capsys.readouterr()
    assert run(argv) == 0  # re-enrolment replaces an existing credential
    assert "credential replaced" in capsys.readouterr().out


def test_enroll_never_overwrites_a_non_credential(
        tmp_path: Path, agency_key: tuple[Path, bytes],
        capsys: pytest.CaptureFixture[str]) -> None:
    key_path, _ = agency_key
    before = key_path.read_bytes()
    assert run(["enroll", "--agency-key", str(key_path), "--aor", "sip:a@b.example",
                "--role", "ems", "--device-key", "00" * 32, "--out", str(key_path)]) == 1
    assert "not a credential; refusing" in capsys.readouterr().err
    assert key_path.read_bytes() == before


@pytest.mark.parametrize(("extra", "message"), [
    (["--device-key", "abcd", "--out", "x"], "64 hex digits"),
    (["--device-key", "00" * 32], "--out FILE is required"),
    (["--device-key", "00" * 32, "--out", "x", "--expires", "soon"], "duration"),
    (["--device-key", "00" * 32, "--out", "x", "--role", "bad role"], "--role"),
    (["--device-key", "00" * 32, "--out", "x", "--aor", "medic@fire"], "--aor"),
    (["--data-dir", "{tmp}/empty"], "does not exist"),
])
def test_enroll_usage_errors(tmp_path: Path, agency_key: tuple[Path, bytes],
                             capsys: pytest.CaptureFixture[str], extra: list[str],
                             message: str) -> None:
    key_path, _ = agency_key
    argv = ["enroll", "--agency-key", str(key_path), "--aor", "sip:*@fire.example",
            "--role", "medic"]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert run(argv) == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [key_path]


def test_enroll_bad_agency_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "bogus.key"
    bogus.write_text("hello\n")
    assert run(["enroll", "--agency-key", str(bogus), "--aor", "sip:a@b.example", "--role",
                "x", "--device-key", "00" * 32, "--out", str(tmp_path / "c")]) == 1
    assert "not a meshcomm key file" in capsys.readouterr().err


def test_enroll_requires_exactly_one_device_source(tmp_path: Path) -> None:
    for extra in ([], ["--device-key", "00" * 32, "--data-dir", str(tmp_path)]):
        with pytest.raises(SystemExit):
            run(["enroll", "--agency-key", "k", "--aor", "sip:a@b", "--role", "r", *extra])


def test_parse_duration() -> None:
    assert parse_duration_s("90s") == 90
    assert parse_duration_s("30d") == 30 * 86400
    assert parse_duration_s("1d12h") == 36 * 3600
    assert parse_duration_s("2w") == 14 * 86400
    for bad in ("", "0d", "30", "d", "1.5d", "-1d", "30d ", "99999w"):
        with pytest.raises(UsageError):
            parse_duration_s(bad)


def test_aor_patterns_accepted_match_as_credentials_do() -> None:
    for good in ("sip:medic-7@fire.example", "sip:*@fire.example", "sips:engine-*@ems.ex"):
        check_aor_pattern(good)
    for bad in ("medic@fire", "sip:fire.example", "sip:a*b*@x", "sip:a@*.example",
                "http:a@b", "sip:a b@c", "sip:" + "a" * 300 + "@b"):
        with pytest.raises(UsageError):
            check_aor_pattern(bad)
    assert aor_matches("sips:engine-*@ems.ex", "sips:engine-3@ems.ex")


def test_keygen_on_a_full_disk_leaves_nothing_behind(
        small_disk: SmallDisk, capsys: pytest.CaptureFixture[str]) -> None:
    path = small_disk.path / "agency.key"
    small_disk.fill()
    assert run(["keygen", "--out", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"meshcomm keygen: no space left on device writing "
                                    f"{path}")
    assert captured.out == ""          # no public key printed for a key that does not exist
    assert sorted(p.name for p in small_disk.path.iterdir()
                  if not p.name.startswith("filler")) == []
    small_disk.free()
    assert run(["keygen", "--out", str(path)]) == 0
    assert read_key_file(path).public_key.hex() == capsys.readouterr().out.strip()


def test_keygen_replaces_an_incomplete_key_file(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agency.key"
    path.write_bytes(b"")                # what an interrupted keygen of an older version left
    assert run(["keygen", "--out", str(path)]) == 0
    assert read_key_file(path).public_key.hex() == capsys.readouterr().out.strip()


def test_enroll_on_a_full_disk_keeps_the_old_credential(
        small_disk: SmallDisk, agency_key: tuple[Path, bytes],
        capsys: pytest.CaptureFixture[str]) -> None:
    key_path, _ = agency_key
    data_dir = small_disk.path / "device"
    load_or_create_identity(data_dir)
    enroll = ["enroll", "--agency-key", str(key_path), "--aor", "sip:*@fire.example",
              "--data-dir", str(data_dir)]
    assert run([*enroll, "--role", "medic"]) == 0
    before = (data_dir / CREDENTIAL_FILE).read_bytes()
    capsys.readouterr()
    small_disk.fill()
    assert run([*enroll, "--role", "engine-3"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"meshcomm enroll: no space left on device writing {data_dir / CREDENTIAL_FILE}")
    assert (data_dir / CREDENTIAL_FILE).read_bytes() == before
    assert sorted(p.name for p in data_dir.iterdir()) == [CREDENTIAL_FILE, "identity.key"]
