"""``meshcomm export`` over a ``ctl collect`` directory of an incident whose devices
witnessed each other's signed checkpoints (meshcomm/export/pipeline.py with
crosscheck.py): an honest set verifies with the clocks hours apart recovered; a device
that rewrote and re-signed its history verifies alone but is caught by the witnesses,
named by entry, refused, and the clocks are estimated again without it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from meshcomm.cli.main import main
from meshcomm.export.reader import PUBLIC_KEY_FILE
from meshcomm.journal.store import ROW_COLUMNS, JournalStore, decode_row_untrusted
from meshcomm.journal.verify import verify_journal
from meshcomm.security.identity import Identity
from tests.export.journals import build_incident, plain, rechain

IDS = [Identity(bytes([0x60 + i]) * 32) for i in range(4)]
HEX = [ident.node_id.hex() for ident in IDS]
SKEWS = [0.0, 7200.0, -3600.0, 45.5]


def _collection(root: Path) -> tuple[Path, list[list[int]]]:
    out = root / "collected"
    stores = []
    for ident in IDS:
        directory = out / ident.node_id.hex()
        directory.mkdir(parents=True)
        (directory / PUBLIC_KEY_FILE).write_text(ident.public_key.hex() + "\n")
        stores.append(JournalStore.open(directory / "journal.sqlite", ident.node_id))
    try:
        incident = build_incident(IDS, stores, seed=11, steps=150, skews=SKEWS)
    finally:
        for store in stores:
            store.close()
    return out, [sorted(heads) for heads in incident.witnessed]


def _resign_from(path: Path, who: Identity, seq: int) -> int:
    """The device rewrites its first entry from ``seq`` on that is not a checkpoint (a
    checkpoint is signed again as it was), chains the rest again and signs each
    checkpoint again: the file verifies on its own. Returns the seq rewritten."""
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    entries = [decode_row_untrusted(row) for row in
               conn.execute(f"SELECT {ROW_COLUMNS} FROM entries ORDER BY seq")]
    while entries[seq - 1].type == "journal.checkpoint":
        seq += 1
    tail = plain(entries[seq - 1:])
    kind, data, mono, wall = tail[0]
    tail[0] = (kind, {**data, "rewritten": True}, mono, wall)
    conn.execute("DELETE FROM entries WHERE seq >= ?", (seq,))
    for entry, data_bytes in rechain(who, entries[:seq - 1], tail):
        conn.execute(f"INSERT INTO entries ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (entry.seq, entry.mono_s, entry.wall_s, entry.node_id, entry.type,
                      data_bytes, entry.prev_hash, entry.entry_hash))
    conn.commit()
    conn.close()
    assert verify_journal(path, who.public_key).ok
    return seq


def _export(collected: Path, out: Path, capsys: pytest.CaptureFixture[str],
            *options: str) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    code = main(["export", str(collected), "--out", str(out), "--json", "--quiet", *options])
    summary = json.loads(capsys.readouterr().out)
    events = [json.loads(x) for x in (out / "timeline.jsonl").read_text().splitlines()]
    return code, summary, events


def test_an_honest_collection_verifies_with_the_clocks_recovered(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    collected, _ = _collection(tmp_path)
    code, summary, events = _export(collected, tmp_path / "out", capsys)
    assert code == 0 and summary["problems"] == [] and summary["verified"]
    devices = summary["devices"]
    assert [d["device"] for d in devices] == sorted(HEX)
    assert all(d["signed"] and d["merged"] and d["checkpoints"] >= 3 for d in devices)
    for d in devices:
        true = SKEWS[HEX.index(d["device"])] - SKEWS[HEX.index(min(HEX))]
        assert abs(d["offset_s"] - true) < 0.25, d
    assert len(events) == summary["events"] == sum(d["entries"] for d in devices)
    assert summary["crosscheck"]["claims"] > 10
    sent = {e["data"]["env"]: e["corrected_s"] for e in events
            if e["type"] == "sip.message" and e["data"]["dir"] == "to-mesh"}
    received = [(e["data"]["env"], e["corrected_s"]) for e in events
                if e["type"] == "sip.message" and e["data"]["dir"] == "from-mesh"]
    assert received and all(at >= sent[env] for env, at in received)   # no causality violation


def test_a_resigned_history_is_caught_by_its_witnesses_and_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    collected, witnessed = _collection(tmp_path)
    _, honest, _ = _export(collected, tmp_path / "honest", capsys)
    liar = 2
    seq = witnessed[liar][1] - 2                       # between two witnessed heads
    seq = _resign_from(collected / HEX[liar] / "journal.sqlite", IDS[liar], seq)
    first = min(h for h in witnessed[liar] if h >= seq)
    code, summary, events = _export(collected, tmp_path / "out", capsys)
    assert code == 1 and not summary["verified"]
    assert [(p["device"], p["entry"], p["kind"])
            for p in summary["problems"]] == [(HEX[liar], first, "fork")]
    devices = {d["device"]: d for d in summary["devices"]}
    assert devices[HEX[liar]]["merged"] is False and devices[HEX[liar]]["offset_s"] is None
    assert HEX[liar] not in {e["device"] for e in events}
    assert 0 < summary["exchanges"] < honest["exchanges"]      # paired again without it
    code, summary, events = _export(collected, tmp_path / "kept", capsys,
                                    "--allow-unverified")
    assert code == 1
    assert {e["verified"] for e in events if e["device"] == HEX[liar]} == {False}
    assert {e["verified"] for e in events if e["device"] != HEX[liar]} == {True}
