"""SIP users on disk (issue 12 item 2): when authentication is on, the data dir store
(0600, atomic, a full disk changes nothing), ``[sip] users_file``, the file format read
as untrusted input, and the ``user`` control command never echoing a password."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshcomm.cli.main import main
from meshcomm.config import NodeConfig, SipSettings
from meshcomm.errors import ConfigError, DecodeError
from meshcomm.node.gateway.users import (
    MAX_SIP_USERS,
    UserTable,
    decode_users_untrusted,
    encode_users,
    format_user,
    ha1_of,
    make_user,
)
from meshcomm.runtime.control import ControlCommand, ControlRequest
from meshcomm.runtime.handlers import user
from meshcomm.runtime.sipusers import SIP_USERS_FILE, SipUsers, auth_required
from meshcomm.sip.digest import DigestAlgorithm
from tests.node.small_disk import small_disk

ALICE = "sip:alice@incident.local"


def config(**sip: object) -> NodeConfig:
    return dataclasses.replace(NodeConfig(), sip=dataclasses.replace(SipSettings(), **sip))


def test_required_beyond_loopback_optional_on_it() -> None:
    assert not auth_required("127.0.0.1", False) and not auth_required("::1", False)
    assert auth_required("127.0.0.1", True)
    for host in ("0.0.0.0", "::", "10.77.0.1", "fe80::1", "[::]", "192.0.2.7"):
        assert auth_required(host, False), host


def test_store_add_replace_remove_is_durable_and_private(tmp_path: Path) -> None:
    users = SipUsers.open(config(), tmp_path, "10.0.0.1", 0.0)
    assert users.auth is not None and users.auth.settings.realm == "incident.local"
    row = users.add(ALICE, "pw one")
    assert row["aor"] == ALICE and row["replaced"] is False
    path = tmp_path / SIP_USERS_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert "pw one" not in text and text.startswith("# meshcomm sip users v1\n")
    first = users.table.get(ALICE)
    assert first is not None and users.add("alice@incident.local", "pw two")["replaced"] is True
    second = users.table.get(ALICE)
    assert second is not None and second.ha1(DigestAlgorithm.SHA256) != first.ha1(
        DigestAlgorithm.SHA256)
    again = SipUsers.open(config(), tmp_path, "10.0.0.1", 1.0)       # a restart
    assert again.table.get(ALICE) == second
    users.remove(ALICE)
    assert users.table.get(ALICE) is None
    assert SipUsers.open(config(), tmp_path, "10.0.0.1", 2.0).table.get(ALICE) is None
    with pytest.raises(DecodeError, match="no stored SIP user"):
        users.remove(ALICE)


def test_off_on_loopback_but_users_can_be_added(tmp_path: Path) -> None:
    users = SipUsers.open(config(), tmp_path, "127.0.0.1", 0.0)
    assert users.auth is None and users.status()["required"] is False
    users.add(ALICE, "pw")
    on = SipUsers.open(config(require_auth=True), tmp_path, "127.0.0.1", 0.0)
    assert on.auth is not None and on.auth.users.get(ALICE) is not None


def test_users_file_and_store_together(tmp_path: Path) -> None:
    file = tmp_path / "provisioned"
    bob = make_user("sip:bob@incident.local", "b", "incident.local")
    file.write_text(format_user(bob) + "\n# a comment\n")
    users = SipUsers.open(config(users_file=str(file)), tmp_path, "0.0.0.0", 0.0)
    assert [r["source"] for r in users.rows()] == ["users_file"]
    with pytest.raises(DecodeError, match="users_file"):
        users.remove("sip:bob@incident.local")
    users.add("sip:bob@incident.local", "newer")             # the store wins over the file
    assert users.rows()[0]["source"] == "store"
    file.write_text(format_user(bob) + "\n" + format_user(bob) + "\n")
    with pytest.raises(ConfigError, match=r"provisioned:2: .* listed twice"):
        SipUsers.open(config(users_file=str(file)), tmp_path, "0.0.0.0", 0.0)
    with pytest.raises(ConfigError, match="does not exist"):
        SipUsers.open(config(users_file=str(tmp_path / "none")), tmp_path, "0.0.0.0", 0.0)


def test_a_full_disk_changes_nothing(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        users = SipUsers.open(config(), disk.path, "10.0.0.1", 0.0)
        users.add(ALICE, "before")
        before = (disk.path / SIP_USERS_FILE).read_bytes()
        disk.fill()
        with pytest.raises(DecodeError, match="no space left"):
            users.add("sip:bob@incident.local", "x" * 200)
        assert users.table.get("sip:bob@incident.local") is None
        assert (disk.path / SIP_USERS_FILE).read_bytes() == before
        disk.free()
        users.add("sip:bob@incident.local", "after")
        assert SipUsers.open(config(), disk.path, "10.0.0.1", 0.0).table.get(
            "sip:bob@incident.local") is not None


def test_control_command_never_echoes_the_password(tmp_path: Path) -> None:
    users = SipUsers.open(config(), tmp_path, "10.0.0.1", 0.0)
    secret = "s3cret-horse"

    def ask(**args: object) -> object:
        return user(users, ControlRequest(ControlCommand.USER, args))

    added = ask(action="add", aor=ALICE, password=secret)
    listed = ask(action="list")
    assert secret not in repr(added) + repr(listed)
    assert isinstance(listed, dict) and listed["required"] is True
    assert [r["aor"] for r in listed["users"]] == [ALICE]
    for bad in ({"action": "add", "aor": ALICE}, {"action": "add", "aor": "not an aor",
                                                  "password": "x"},
                {"action": "add", "aor": ALICE, "password": ""},
                {"action": "add", "aor": ALICE, "password": "a\nb"},
                {"action": "fly", "aor": ALICE}):
        with pytest.raises(DecodeError):
            ask(**bad)
    with pytest.raises(DecodeError, match="without a SIP gateway"):
        user(None, ControlRequest(ControlCommand.USER, {"action": "list"}))


def test_table_bound() -> None:
    table = UserTable(stored=[make_user(f"sip:u{i}@d.example", "p", "d.example")
                              for i in range(MAX_SIP_USERS)])
    with pytest.raises(DecodeError, match="at most"):
        table.with_added(make_user("sip:one-more@d.example", "p", "d.example"))
    assert len(table.with_added(make_user("sip:u1@d.example", "new", "d.example"))) \
        == MAX_SIP_USERS                                     # a replacement still fits


def test_format_round_trip() -> None:
    users = [make_user(f"sip:u{i}@d.example", f"p{i}", "d.example") for i in range(5)]
    assert decode_users_untrusted(encode_users(users), "x") == users


@given(st.binary(max_size=2000) | st.text(max_size=400).map(str.encode))
@settings(max_examples=400, deadline=None)
def test_any_bytes_decode_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_users_untrusted(data, "f")


def test_truncated_and_oversized_files() -> None:
    line = format_user(make_user(ALICE, "pw", "incident.local"))
    for cut in range(1, len(line)):
        with contextlib.suppress(DecodeError):
            decode_users_untrusted(line[:cut].encode(), "f")
    with pytest.raises(DecodeError, match="line too long"):
        decode_users_untrusted(b"x" * 2000, "f")
    with pytest.raises(DecodeError, match="larger"):
        decode_users_untrusted(b"#" * (MAX_SIP_USERS * 1024 + 1), "f")


def test_ctl_user_hash_prints_a_users_file_line(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("pw from stdin\n"))
    assert main(["ctl", "user", "hash", "alice@incident.local", "--realm", "incident.local"]) == 0
    out = capsys.readouterr().out.strip()
    assert "pw from stdin" not in out
    user = decode_users_untrusted(out.encode(), "stdout")[0]
    assert user.aor == ALICE and user.ha1(DigestAlgorithm.MD5) == ha1_of(
        DigestAlgorithm.MD5, "alice", "incident.local", "pw from stdin")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["ctl", "user", "hash", ALICE, "--realm", "incident.local"]) == 2
    assert "empty password" in capsys.readouterr().err


def test_ctl_user_without_a_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ctl", "--data-dir", str(tmp_path), "user", "list"]) == 1
    assert "no node is running" in capsys.readouterr().err


def test_start_log_names_the_setting_old_clients_need(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A SHA-256 offer stops baresip 1.0 and SIPp 3.6 (tests/interop/test_sip_auth_clients):
    the start-up log says which setting serves them; an MD5-only offer needs no hint."""
    hint = 'auth_algorithms = ["MD5"]'
    with caplog.at_level("INFO", logger="meshcomm.runtime.sipusers"):
        SipUsers.open(config(), tmp_path, "10.0.0.1", 0.0)
    assert hint in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="meshcomm.runtime.sipusers"):
        users = SipUsers.open(config(auth_algorithms=("MD5",)), tmp_path, "10.0.0.1", 0.0)
        SipUsers.open(config(), tmp_path, "127.0.0.1", 0.0)        # auth off: no offer
    assert users.auth is not None and users.status()["algorithms"] == ["MD5"]
    assert hint not in caplog.text and "MD5" in caplog.text
