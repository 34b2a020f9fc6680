"""``meshcomm export`` on real journal files: two devices two hours apart that exchanged a
MESSAGE and its 200 OK are merged in true order with the skew estimated; a tampered
journal is named and left out (or kept, marked, with --allow-unverified); bad paths and an
unwritable output are clear errors."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from meshcomm.cli.main import main
from meshcomm.export.outputs import CSV_COLUMNS
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


def _collected(root: Path) -> Path:
    """A ``ctl collect`` output: per device, journal.sqlite and public.key (no identity)."""
    (root / "data").mkdir()
    a, b = _two_devices(root / "data")
    out = root / "collected"
    for data_dir, who in ((a, A), (b, B)):
        device = out / who.node_id.hex()
        device.mkdir(parents=True)
        (device / "journal.sqlite").write_bytes((data_dir / "journal.sqlite").read_bytes())
        (device / "public.key").write_text(who.public_key.hex() + "\n")
    return out


def test_a_collection_directory_expands_to_its_devices_with_their_public_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    collected = _collected(tmp_path)
    assert main(["export", str(collected), "--out", str(tmp_path / "o"), "--json",
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert captured.err == ""
    assert [(d["device"], d["signed"], d["checkpoints"]) for d in summary["devices"]] == [
        (A.node_id.hex(), True, 1), (B.node_id.hex(), True, 1)]
    # A key that is not the device's, or not a key, is not used (checkpoints unsigned).
    (collected / A.node_id.hex() / "public.key").write_text(B.public_key.hex() + "\n")
    (collected / B.node_id.hex() / "public.key").write_text("zz" * 32 + "\n")
    assert main(["export", str(collected), "--out", str(tmp_path / "o"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [d["signed"] for d in summary["devices"]] == [False, False]
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2


def _with_bodies(root: Path) -> tuple[Path, Path]:
    body = JournalRecord.of(SipMessageSeen(
        direction="to-mesh", method="MESSAGE", status=None, call_id="c2@a", cseq=1,
        from_aor="sip:carol@x", to_aor="sip:Dave@x", peer=B.node_id[:8].hex() + ".mesh",
        hops=2, body=b"secret,\"text\"", body_len=13))
    a = _device(root, A, [(1000.0, _sip("to-mesh", B, None)),
                          (1000.12, _sip("from-mesh", B, 200)), (1001.0, body)])
    b = _device(root, B, [(1000.05 + SKEW_S, _sip("from-mesh", A, None)),
                          (1000.06 + SKEW_S, _sip("to-mesh", A, 200))])
    return a, b


def _lines(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]


def test_bodies_are_written_only_when_asked_for_and_csv_matches_jsonl(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _with_bodies(tmp_path)
    out = tmp_path / "out"
    assert main(["export", str(a), str(b), "--out", str(out), "--quiet"]) == 0
    text = (out / "timeline.jsonl").read_text() + (out / "timeline.csv").read_text()
    assert b"secret".hex() not in text and '"body_len":13' in text
    assert main(["export", str(a), str(b), "--out", str(out), "--quiet",
                 "--include-bodies"]) == 0
    events = _lines(out)
    kept = [e for e in events if e["data"].get("body")]  # type: ignore[attr-defined]
    assert [e["data"]["body"] for e in kept] == [b'secret,"text"'.hex()]  # type: ignore[index]
    with open(out / "timeline.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(events) + 1
    for row, event in zip(rows[1:], events, strict=True):
        assert row[:8] == [str(event[c]) for c in CSV_COLUMNS[:8]]
        assert json.loads(row[8]) == event["data"]
    capsys.readouterr()


def test_filters_choose_the_events_written_not_the_verification_or_clocks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _with_bodies(tmp_path)
    out = tmp_path / "out"
    assert main(["export", str(a), str(b), "--out", str(out), "--json", "--quiet"]) == 0
    full = json.loads(capsys.readouterr().out)
    runs: dict[str, tuple[list[str], int]] = {
        "type": (["--type", "journal.checkpoint"], 2),
        "call": (["--call-id", "c2@a", "--call-id", "other"], 1),
        "aor": (["--aor", "Dave@X"], 1),
        "aor, user part differs": (["--aor", "dave@x"], 0),
        "time": (["--from", "1970-01-01T00:16:40.03Z", "--to", "1000.1"], 2),
        "all": (["--type", "sip.message", "--from", "1000.0", "--aor", "sip:a@x"], 4),
    }
    for name, (options, count) in runs.items():
        assert main(["export", str(a), str(b), "--out", str(out), "--json", "--quiet",
                     *options]) == 0, name
        summary = json.loads(capsys.readouterr().out)
        assert summary["events"] == len(_lines(out)) == count, name
        assert summary["events_merged"] == full["events"] == 7
        assert summary["exchanges"] == full["exchanges"]
        assert [d["offset_s"] for d in summary["devices"]] == [
            d["offset_s"] for d in full["devices"]]
    times = [e["corrected_s"] for e in _lines(out)]
    assert times == sorted(times)
    assert main(["export", str(a), "--out", str(out), "--from", "soon"]) == 2
    assert "neither Unix seconds nor an ISO 8601" in capsys.readouterr().err
    assert main(["export", str(a), "--out", str(out), "--from", "5", "--to", "4"]) == 2


def test_progress_goes_to_stderr_and_json_alone_to_stdout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _two_devices(tmp_path)
    assert main(["export", str(a), str(b), "--out", str(tmp_path / "o"), "--json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)
    assert "export: verifying 2 journal(s)" in captured.err
    assert "export: merging 2 journal(s)" in captured.err


def test_long_exports_report_progress_while_verifying_and_merging(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import meshcomm.export.outputs as outputs
    import meshcomm.export.pipeline as pipeline
    import meshcomm.export.reader as reader

    monkeypatch.setattr(pipeline, "PROGRESS_INTERVAL_S", 0.0)   # every tick is a line
    monkeypatch.setattr(reader, "SCAN_PROGRESS_ROWS", 2)
    monkeypatch.setattr(outputs, "PROGRESS_EVERY", 2)
    a, b = _two_devices(tmp_path)
    assert main(["export", str(a), str(b), "--out", str(tmp_path / "o"), "--no-capture",
                 "--no-report"]) == 0
    err = capsys.readouterr().err
    assert "entries read" in err and "merged 4 of 6 events" in err
    assert main(["export", str(a), str(b), "--out", str(tmp_path / "o"), "--quiet",
                 "--no-capture", "--no-report"]) == 0
    assert capsys.readouterr().err == ""
