"""``meshcomm revoke`` / ``add-agency`` offline: record files and usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshcomm.cli.main import main
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.keystore import write_key_file
from meshcomm.security.revocation import (
    TrustKind,
    credential_id,
    decode_trust_record_untrusted,
)

AGENCY = Identity(b"G" * 32)
DEVICE = Identity(b"D" * 32)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "agency.key"
    write_key_file(path, AGENCY)
    return path


def test_offline_device_revocation_to_a_file(key_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.bin"
    assert main(["revoke", "--agency-key", str(key_file), "--incident", "inc",
                 "--device-key", DEVICE.public_key.hex(), "--note", "lost", "--out",
                 str(out)]) == 0
    record = decode_trust_record_untrusted(out.read_bytes())
    assert record.kind is TrustKind.REVOKE_DEVICE and record.subject == DEVICE.public_key
    assert record.signer == AGENCY.public_key and record.envelope.incident == "inc"
    assert record.note == "lost"
    # never overwrites a record file
    assert main(["revoke", "--agency-key", str(key_file), "--incident", "inc",
                 "--device-key", DEVICE.public_key.hex(), "--out", str(out)]) == 1


def test_credential_file_and_agency_addition(key_file: Path, tmp_path: Path) -> None:
    cred = issue_credential(AGENCY, aor_pattern="sip:*@x.example", role="medic",
                            device_key=DEVICE.public_key, issued_at=0, expires_at=10)
    cred_file = tmp_path / "cred.bin"
    cred_file.write_bytes(cred.to_bytes())
    out = tmp_path / "c.bin"
    assert main(["revoke", "--agency-key", str(key_file), "--incident", "inc",
                 "--credential", str(cred_file), "--out", str(out)]) == 0
    record = decode_trust_record_untrusted(out.read_bytes())
    assert record.kind is TrustKind.REVOKE_CREDENTIAL and record.subject == credential_id(cred)
    add = tmp_path / "a.bin"
    assert main(["add-agency", "--agency-key", str(key_file), "--incident", "inc",
                 "--key", DEVICE.public_key.hex(), "--out", str(add)]) == 0
    assert decode_trust_record_untrusted(add.read_bytes()).kind is TrustKind.ADD_AGENCY


@pytest.mark.parametrize("argv", [
    ["revoke", "--device-key", "zz", "--out", "x"],                       # not hex
    ["revoke", "--device-key", "ab" * 32, "--out", "x"],                  # node signs: no out
    ["revoke", "--agency", "ab" * 32, "--data-dir", "d"],                 # needs agency key
    ["revoke", "--agency-key", "K", "--device-key", "ab" * 32, "--out", "x"],  # no incident
    ["add-agency", "--key", "ab" * 32, "--out", "x"],                     # needs agency key
    ["revoke", "--agency-key", "K", "--incident", "i", "--device-key", "ab" * 32],  # nowhere
])
def test_usage_errors(argv: list[str], key_file: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(key_file) if a == "K" else str(tmp_path / a) if a in ("x", "d") else a
            for a in argv]
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith("meshcomm ")
    assert not (tmp_path / "x").exists()


def test_garbage_record_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x92\x00\x01garbage")
    assert main(["revoke", "--record", str(bad), "--data-dir", str(tmp_path)]) == 1
    assert "meshcomm revoke" in capsys.readouterr().err
