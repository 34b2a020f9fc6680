"""``meshcomm handover``: an agency-signed hand-over of a role address, offline (a file)
and straight to a real running node's control socket (issue 12.3)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from meshcomm.cli.main import main
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handover_ctl import HANDOVERS_FILE
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity, verify_signature
from meshcomm.security.keystore import write_key_file
from meshcomm.security.roles import decode_handover_untrusted
from tests.runtime.test_control import run_with_server

AGENCY = Identity(b"G" * 32)
MUTUAL_AID = Identity(b"M" * 32)
NEW = Identity(b"N" * 32)
OPS = "sip:ops-chief@fire.example"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "agency.key"
    write_key_file(path, AGENCY)
    return path


def _credential(tmp_path: Path, role: str, *, agency: Identity = AGENCY,
                expires_in: int = 3600) -> Path:
    now = int(time.time())
    cred = issue_credential(agency, aor_pattern="sip:*@fire.example", role=role,
                            device_key=NEW.public_key, issued_at=now - 60,
                            expires_at=now + expires_in)
    path = tmp_path / f"{role}-{agency.public_key.hex()[:4]}-{expires_in}.bin"
    path.write_bytes(cred.to_bytes())
    return path


def test_agency_handover_to_a_key_written_to_a_file(key_file: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ops.handover"
    before = int(time.time())
    assert main(["handover", "--agency-key", str(key_file), "--role", "ops-chief@Fire.Example",
                 "--to", NEW.public_key.hex(), "--out", str(out)]) == 0
    record = decode_handover_untrusted(out.read_bytes())
    assert (record.aor, record.new_key, record.signer_key) == (
        OPS, NEW.public_key, AGENCY.public_key)
    assert before <= record.from_time <= time.time()
    assert verify_signature(AGENCY.public_key, record.signed_bytes, record.signature)
    assert out.stat().st_mode & 0o777 == 0o644
    assert "wrote hand-over of sip:ops-chief@fire.example" in capsys.readouterr().out
    # never overwrites a record file
    assert main(["handover", "--agency-key", str(key_file), "--role", OPS,
                 "--to", NEW.public_key.hex(), "--out", str(out)]) == 1
    assert decode_handover_untrusted(out.read_bytes()) == record


def test_to_a_credential_checked_for_the_role(key_file: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "h.bin"
    command = _credential(tmp_path, "command")
    assert main(["handover", "--agency-key", str(key_file), "--role", OPS,
                 "--to", str(command), "--out", str(out)]) == 0
    assert decode_handover_untrusted(out.read_bytes()).new_key == NEW.public_key
    refused = {
        _credential(tmp_path, "medic"): "may not hold",
        _credential(tmp_path, "command", expires_in=-30): "expired",
        _credential(tmp_path, "command", agency=MUTUAL_AID): "untrusted agency",
    }
    for cred, why in refused.items():
        capsys.readouterr()
        assert main(["handover", "--agency-key", str(key_file), "--role", OPS,
                     "--to", str(cred), "--out", str(tmp_path / "no.bin")]) == 1
        assert why in capsys.readouterr().err
    assert not (tmp_path / "no.bin").exists()
    # the mutual-aid agency's credential is fine once the profile trusts that agency, and
    # the profile's own role table decides what a role address is
    profile = tmp_path / "field.toml"
    profile.write_text(f'[trust]\npolicy = "agency"\nagency_keys = ["{AGENCY.public_key.hex()}",'
                       f' "{MUTUAL_AID.public_key.hex()}"]\n'
                       f'role_addresses = ["ops-chief=command", "logistics=command"]\n')
    aid = _credential(tmp_path, "command", agency=MUTUAL_AID)
    for role, name in ((OPS, "a.bin"), ("sip:logistics@fire.example", "b.bin")):
        assert main(["handover", "--agency-key", str(key_file), "--role", role,
                     "--to", str(aid), "--config", str(profile), "--out",
                     str(tmp_path / name)]) == 0
    assert main(["handover", "--agency-key", str(key_file), "--role", "sip:ic@fire.example",
                 "--to", str(aid), "--config", str(profile), "--out",
                 str(tmp_path / "c.bin")]) == 1         # not a role address of this profile


@pytest.mark.parametrize(("argv", "says"), [
    (["--agency-key", "BADKEY", "--role", OPS, "--to", "NEWKEY", "--out", "x"],
     "not a meshcomm key file"),
    (["--agency-key", "NOKEY", "--role", OPS, "--to", "NEWKEY", "--out", "x"],
     "cannot read key file"),
    (["--agency-key", "K", "--role", "sip:bob@fire.example", "--to", "NEWKEY", "--out", "x"],
     "no role address"),
    (["--agency-key", "K", "--role", "sip:ops-chief", "--to", "NEWKEY", "--out", "x"],
     "expected an address"),
    (["--agency-key", "K", "--role", OPS, "--to", "zz" * 32, "--out", "x"],
     "64 hex digits"),
    (["--agency-key", "K", "--role", OPS, "--to", "ab" * 31, "--out", "x"],
     "neither a public key"),
    (["--agency-key", "K", "--role", OPS, "--to", "K", "--out", "x"], "not a credential"),
    (["--agency-key", "K", "--role", OPS, "--to", "NEWKEY"], "--out FILE and/or --data-dir"),
    (["--agency-key", "K", "--to", "NEWKEY", "--out", "x"], "--role and --to are required"),
    (["--record", "K", "--role", OPS, "--data-dir", "d"], "--record goes with --data-dir"),
    (["--agency-key", "K", "--role", OPS, "--to", "NEWKEY", "--data-dir", "d"],
     "no node is running"),
])
def test_usage_errors(argv: list[str], says: str, key_file: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("hello\n")
    names = {"K": str(key_file), "BADKEY": str(bad), "NOKEY": str(tmp_path / "none.key"),
             "NEWKEY": NEW.public_key.hex(), "x": str(tmp_path / "x"),
             "d": str(tmp_path / "d")}
    assert main(["handover", *[names.get(a, a) for a in argv]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("meshcomm handover: ") and says.lower() in err.lower(), err
    assert not (tmp_path / "x").exists()


def test_given_to_a_running_node_now_and_later_from_the_file(key_file: Path,
                                                            tmp_path: Path) -> None:
    """The new holder's node takes the hand-over through its control socket (the same
    socket ``meshcomm revoke --data-dir`` uses), keeps it across restarts and carries it in
    its bindings; a node that is not the new holder refuses it."""
    later = tmp_path / "for-the-node.handover"
    other = tmp_path / "names-another.handover"

    async def scenario(driver: NodeDriver, path: Path, _stop: asyncio.Event) -> None:
        me = driver.node.identity.public_key.hex()

        def run(*argv: str) -> int:
            return main(["handover", *argv])

        assert await asyncio.to_thread(
            run, "--agency-key", str(key_file), "--role", OPS, "--to", me,
            "--data-dir", str(path.parent)) == 0
        taken = driver.node.handovers[OPS]
        assert (taken.signer_key, taken.new_key) == (AGENCY.public_key, bytes.fromhex(me))
        assert (path.parent / HANDOVERS_FILE).is_file()
        safety = "sip:safety@fire.example"
        assert await asyncio.to_thread(
            run, "--agency-key", str(key_file), "--role", safety, "--to", me,
            "--out", str(later)) == 0
        assert safety not in driver.node.handovers             # only written so far
        assert await asyncio.to_thread(
            run, "--record", str(later), "--data-dir", str(path.parent)) == 0
        assert driver.node.handovers[safety].to_bytes() == later.read_bytes()
        assert await asyncio.to_thread(
            run, "--agency-key", str(key_file), "--role", "sip:ic@fire.example",
            "--to", NEW.public_key.hex(), "--out", str(other)) == 0
        assert await asyncio.to_thread(
            run, "--record", str(other), "--data-dir", str(path.parent)) == 1
        assert "sip:ic@fire.example" not in driver.node.handovers
        (tmp_path / "junk").write_bytes(b"\x92\x00")
        assert await asyncio.to_thread(
            run, "--record", str(tmp_path / "junk"), "--data-dir", str(path.parent)) == 1

    run_with_server(tmp_path, scenario)
