"""``meshcomm export`` on real journal files: two devices two hours apart that exchanged a
MESSAGE and its 200 OK are merged in true order with the skew estimated; a tampered
journal is named and left out (or kept, marked, with --allow-unverified); bad paths and an
unwritable output are clear errors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from meshcomm.cli.main import main
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import SipMessageSeen
from meshcomm.journal.store import JournalStore
from meshcomm.security.identity import Identity
from meshcomm.security.keystore import IDENTITY_FILE, write_key_file

SKEW_S = 7200.0
A, B = Identity(b"\x0a" * 32), Identity(b"\x0b" * 32)


def _sip(direction: str, peer: Identity, status: int | None) -> JournalRecord:
    return JournalRecord.of(SipMessageSeen(
        direction=direction, method="MESSAGE", status=status, call_id="c1@a", cseq=1,
        from_aor="sip:a@x", to_aor="sip:b@x", peer=peer.node_id[:8].hex() + ".mesh",
        hops=2))


def _device(root: Path, who: Identity, records: list[tuple[float, JournalRecord]]) -> Path:
    data_dir = root / who.node_id[:4].hex()
    data_dir.mkdir()
    write_key_file(data_dir / IDENTITY_FILE, who)
    with JournalStore.open(data_dir / "journal.sqlite", who.node_id) as store:
        for wall, record in records:
            store.append_record(record, wall, wall)
        store.checkpoint(who.sign, 0.0, records[-1][0] + 1.0)
        store.flush()
    return data_dir


def _two_devices(root: Path) -> tuple[Path, Path]:
    a = _device(root, A, [(1000.0, _sip("to-mesh", B, None)),
                          (1000.12, _sip("from-mesh", B, 200))])
    b = _device(root, B, [(1000.05 + SKEW_S, _sip("from-mesh", A, None)),
                          (1000.06 + SKEW_S, _sip("to-mesh", A, 200))])
    return a, b


def test_two_devices_hours_apart_merge_in_true_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _two_devices(tmp_path)
    out = tmp_path / "out"
    assert main(["export", str(a), str(b), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["verified"] and summary["problems"] == [] and summary["exchanges"] == 2
    offsets = {d["device"][:8]: d["offset_s"] for d in summary["devices"]}
    assert offsets[A.node_id[:4].hex()] == 0.0
    assert abs(offsets[B.node_id[:4].hex()] - SKEW_S) < 0.1
    lines = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    assert len(lines) == summary["events"] == 6           # 2 SIP + checkpoint, each
    sip = [(e["device"][:8], e["data"]["dir"]) for e in lines if e["type"] == "sip.message"]
    ha, hb = A.node_id[:4].hex(), B.node_id[:4].hex()
    assert sip == [(ha, "to-mesh"), (hb, "from-mesh"), (hb, "to-mesh"), (ha, "from-mesh")]
    assert (out / "timeline.csv").read_text().count("\n") == 7          # header + 6


def test_a_tampered_journal_is_named_and_left_out_unless_allowed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _two_devices(tmp_path)
    conn = sqlite3.connect(a / "journal.sqlite")
    conn.execute("UPDATE entries SET wall_s = wall_s + 5 WHERE seq = 2")
    conn.commit()
    conn.close()
    out = tmp_path / "out"
    assert main(["export", str(a), str(b), "--out", str(out), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert {(p["device"][:8], p["entry"], p["kind"]) for p in summary["problems"]} == {
        (A.node_id[:4].hex(), 2, "edited")}
    devices = {d["device"][:8]: d for d in summary["devices"]}
    assert devices[A.node_id[:4].hex()]["merged"] is False
    events = [json.loads(x) for x in (out / "timeline.jsonl").read_text().splitlines()]
    assert {e["device"][:8] for e in events} == {B.node_id[:4].hex()}
    assert main(["export", str(a), str(b), "--out", str(out), "--allow-unverified"]) == 1
    events = [json.loads(x) for x in (out / "timeline.jsonl").read_text().splitlines()]
    assert {e["verified"] for e in events if e["device"][:8] == A.node_id[:4].hex()} == {
        False}


def test_paths_without_a_journal_and_an_unwritable_output_are_clear_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = _two_devices(tmp_path)
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "no journal here" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["export", str(a), "--out", str(blocker / "out")]) == 3
    assert "cannot write" in capsys.readouterr().err
    assert main(["export", str(a), "--out", str(tmp_path / "o"), "--reference", "ff"]) == 2


def test_copies_of_one_device_that_disagree_are_a_fork(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _two_devices(tmp_path)
    (tmp_path / "rewritten").mkdir()
    # The device later re-chained and re-signed its history: the message was never sent.
    forged = _device(tmp_path / "rewritten", A, [(1000.0, _sip("from-mesh", B, 200))])
    assert main(["export", str(a), str(forged), str(b), "--out", str(tmp_path / "o"),
                 "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert [(p["device"][:8], p["entry"], p["kind"]) for p in summary["problems"]] == [
        (A.node_id[:4].hex(), 1, "fork")]
