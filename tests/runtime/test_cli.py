"""``meshcomm handset`` / ``relay`` / ``ctl``: exit codes, messages, and one real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshcomm.cli.main import main
from meshcomm.journal.events import JournalEventType
from meshcomm.journal.store import JournalStore
from meshcomm.journal.verify import verify_journal
from meshcomm.runtime.app import JOURNAL_FILE, data_dir_locked
from meshcomm.runtime.control import CONTROL_SOCKET_FILE, NodeNotRunning, control_request
from meshcomm.security.keystore import load_or_create_identity
from tests.envcheck import require, require_program

#: Bound on a child node reaching a state (normally well under a second).
PROCESS_WAIT_S = 20.0
REPO = Path(__file__).resolve().parents[2]


def test_bad_config_names_the_key_and_exits_2(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["handset", "--radio", "udp:lo", "--data-dir", str(tmp_path),
                 "--set", "overlay.helo_interval_s=2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "overlay.helo_interval_s: unknown key" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["relay", "--radio", "udp:lo", "--data-dir", str(tmp_path),
                 "--name", "bad name"]) == 2
    assert "node.name" in capsys.readouterr().err
    assert not (tmp_path / "identity.key").exists()


def test_bad_radio_spec_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["handset", "--radio", "carrier-pigeon:x", "--data-dir", str(tmp_path)]) == 2
    assert "unknown radio kind 'carrier-pigeon'" in capsys.readouterr().err


def test_no_radio_and_missing_interface_are_one_clear_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["handset", "--data-dir", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("meshcomm handset: no radio: give --radio udp:IFACE")
    assert main(["handset", "--radio", "udp:nosuch9", "--data-dir", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "meshcomm handset: radio: 'udp:nosuch9': no network interface 'nosuch9'"


def test_ctl_without_a_node_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for action in (["who"], ["who", "--json"], ["status"], ["stop"]):
        assert main(["ctl", "--data-dir", str(tmp_path), *action]) == 1
        err = capsys.readouterr().err
        assert f"no node is running with data dir {tmp_path}" in err


def test_ether_without_privilege_is_one_clear_line(tmp_path: Path) -> None:
    """Raw frames need CAP_NET_RAW: run the node with that capability dropped."""
    require(os.geteuid() == 0, "needs root to drop a capability")
    setpriv = require_program("setpriv", "util-linux")
    proc = subprocess.run(
        [setpriv, "--bounding-set=-net_raw", "--inh-caps=-net_raw", sys.executable, "-m",
         "meshcomm.cli.main", "handset", "--radio", "ether:lo", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("meshcomm handset: radio ether:lo: permission denied")
    assert "CAP_NET_RAW" in last


def _wait(what: str, condition: object) -> None:
    deadline = time.monotonic() + PROCESS_WAIT_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _answers(sock: Path) -> bool:
    try:
        control_request(sock, "status")
    except NodeNotRunning:
        return False
    return True


def test_real_process_ctl_and_sigterm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A `meshcomm handset` child on a mem radio (alone): ctl who/status, then SIGTERM."""
    data_dir = tmp_path / "node"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshcomm.cli.main", "handset", "--radio", "mem:solo/a",
         "--data-dir", str(data_dir), "--name", "medic-7", "--domain", "fire.example",
         "--shutdown-grace", "0.2", "--sip-listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    try:
        _wait("the control socket", lambda: _answers(data_dir / CONTROL_SOCKET_FILE))
        _wait("the announcement", lambda: control_request(data_dir / CONTROL_SOCKET_FILE,
                                                          "who") != [])
        assert main(["ctl", "--data-dir", str(data_dir), "who", "--json"]) == 0
        who = json.loads(capsys.readouterr().out)
        assert [e["aor"] for e in who] == ["sip:medic-7@fire.example"]
        assert set(who[0]) >= {"aor", "node_id", "hops", "next_hop", "state", "expires"}
        assert main(["ctl", "--data-dir", str(data_dir), "who"]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["AOR", "NODE", "HOPS", "NEXT", "HOP", "STATE", "EXPIRES"]
        assert table[1].split()[:3] == ["sip:medic-7@fire.example", who[0]["node_id"][:8], "0"]
        assert table[-1] == "1 binding(s)"
        assert main(["ctl", "--data-dir", str(data_dir), "status"]) == 0
        assert "sip:medic-7@fire.example" in capsys.readouterr().out
        assert main(["ctl", "--data-dir", str(data_dir), "status", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["role"] == "handset" and status["radios"].keys() == {"mem:solo/a"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=PROCESS_WAIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read() if proc.stderr else ""
    assert "created a new identity" in stderr and "fingerprint" in stderr
    ident, _ = load_or_create_identity(data_dir)
    assert verify_journal(data_dir / JOURNAL_FILE, ident.public_key).ok
    with JournalStore.open(data_dir / JOURNAL_FILE, ident.node_id) as store:
        types = [e.type for e in store.entries()]
    assert JournalEventType.NODE_STOPPED in types
    assert not (data_dir / CONTROL_SOCKET_FILE).exists()


def test_real_relay_process_ctl_stop_wait(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "relay"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshcomm.runtime", "relay", "--radio", "mem:solo/r",
         "--data-dir", str(data_dir), "--shutdown-grace", "0", "--log-level", "warning",
         "--sip-listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    try:
        _wait("the control socket", lambda: _answers(data_dir / CONTROL_SOCKET_FILE))
        assert control_request(data_dir / CONTROL_SOCKET_FILE, "status")["role"] == "relay"
        assert main(["ctl", "--data-dir", str(data_dir), "stop", "--wait"]) == 0
        assert capsys.readouterr().out.strip() == "stopped"
        assert not data_dir_locked(data_dir)
        assert proc.wait(timeout=PROCESS_WAIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None and proc.stderr.read() == ""
