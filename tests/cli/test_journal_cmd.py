"""``meshcomm journal verify FILE...`` and ``python -m meshcomm.journal.verify``: a verdict
per file, the first problem by entry seq, exit 0 ok / 1 tampered or unreadable / 2 usage."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from meshcomm.cli.main import main
from meshcomm.journal.chain import checkpoint_message
from meshcomm.journal.codec import normalize_data
from meshcomm.journal.events import JournalEventType
from meshcomm.journal.store import JournalStore
from meshcomm.security.identity import Identity, fingerprint
from meshcomm.security.keystore import load_or_create_identity
from tests.runtime.disk import SmallDisk

REPO = Path(__file__).resolve().parents[2]
ENTRIES = 30


def make_journal(data_dir: Path, count: int = ENTRIES) -> tuple[Path, Identity]:
    """A node's data dir with an identity and a journal of ``count`` entries, two of them
    signed checkpoints (after entries 10 and 20)."""
    ident, _ = load_or_create_identity(data_dir)
    path = data_dir / "journal.sqlite"
    with JournalStore.open(path, ident.node_id) as store:
        for i in range(count - 2):
            store.append(JournalEventType.NEIGHBOUR_UP, {"i": i, "peer": bytes([i % 256]) * 4},
                         float(i), 1.7e9 + i)
            if i + 1 in (10, 20):
                store.checkpoint(ident.sign, float(i), 1.7e9 + i)
    return path, ident


def sql(path: Path, statement: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(statement, params)
        conn.commit()
    finally:
        conn.close()


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["journal", "verify", *args])
    return code, capsys.readouterr().out.strip().splitlines()


def test_good_journal_is_ok_with_signatures_checked(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path, ident = make_journal(tmp_path)
    code, out = verify(capsys, str(path))
    assert code == 0
    assert out == [f"{path}: ok: {ENTRIES} entries, 2 checkpoint(s) (signatures verified "
                   f"with node key {fingerprint(ident.public_key)}), head seq {ENTRIES}; "
                   f"{ENTRIES - 22} entries after the last checkpoint"]  # checkpoint: seq 22
    code = main(["journal", "verify", "--json", str(path)])
    (result,) = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["verdict"] == "ok" and result["entries"] == ENTRIES
    assert result["checkpoints"] == 2 and result["signatures_checked"] is True
    assert result["public_key"] == ident.public_key.hex()
    assert result["key_source"] == str(tmp_path / "identity.key")
    assert result["first_problem"] is None and result["problem_count"] == 0


def test_explicit_key_of_the_node_or_of_another(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path, ident = make_journal(tmp_path / "node")
    copy = tmp_path / "collected" / "n1.sqlite"        # collected away from its data dir
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    code, out = verify(capsys, str(copy))
    assert code == 0 and "signatures not checked: no key for this node" in out[0]
    other = Identity(bytes(32)).public_key.hex()
    code, out = verify(capsys, "--key", other, "--key", ident.public_key.hex(), str(copy))
    assert code == 0 and "signatures verified" in out[0]
    code, out = verify(capsys, "--key", other, str(copy))
    assert code == 1
    assert out[0].startswith(f"{copy}: TAMPERED: {ENTRIES} entries")
    assert f"the journal is node {ident.node_id.hex()[:16]}'s" in out[0]


def test_edited_entry_is_named_by_its_seq(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = make_journal(tmp_path)
    _, forged = normalize_data({"i": 999, "peer": b"\x00" * 4})
    sql(path, "UPDATE entries SET data = ? WHERE seq = 5", (forged,))
    sql(path, "DELETE FROM entries WHERE seq = 25")
    code, out = verify(capsys, str(path))
    assert code == 1
    assert out[0] == (f"{path}: TAMPERED: {ENTRIES - 1} entries, 2 checkpoint(s); first "
                      "problem at entry 5: entry 5 does not match its hash (content edited) "
                      "(2 problem(s))")
    assert out[1] == "  entry 25: removed: entry 25 missing before entry 26"
    code = main(["journal", "verify", "--json", str(path)])
    (result,) = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "tampered"
    assert result["first_problem"] == {"seq": 5, "kind": "edited", "message":
                                       "entry 5 does not match its hash (content edited)"}


def test_rewritten_history_fails_the_checkpoint_signature(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, ident = make_journal(tmp_path)
    forger = Identity(bytes(range(32)))      # re-signs with a key that is not the node's
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT seq, data FROM entries WHERE type = ?",
                        ("journal.checkpoint",)).fetchall()
    conn.close()
    seq, blob = rows[0]
    data = msgpack.unpackb(blob)
    data["signature"] = forger.sign(checkpoint_message(ident.node_id, data["head_seq"],
                                                       data["head_hash"]))
    _, encoded = normalize_data(data)
    sql(path, "UPDATE entries SET data = ? WHERE seq = ?", (encoded, seq))
    code, out = verify(capsys, str(path))
    assert code == 1 and f"first problem at entry {seq}:" in out[0]


def test_truncated_and_non_journal_files_are_unreadable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = make_journal(tmp_path / "node", count=400)
    truncated = tmp_path / "truncated.sqlite"
    raw = path.read_bytes()
    truncated.write_bytes(raw[:len(raw) // 2])
    text = tmp_path / "notes.txt"
    text.write_text("not a journal\n")
    other_db = tmp_path / "other.sqlite"
    sql(other_db, "CREATE TABLE t (x)")
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.sqlite"
    code, out = verify(capsys, str(path), str(truncated), str(text), str(other_db),
                       str(empty), str(missing), str(tmp_path))
    assert code == 1
    assert out[0].startswith(f"{path}: ok: 400 entries")
    assert out[1] == f"{truncated}: UNREADABLE: database disk image is malformed"
    assert out[2] == f"{text}: UNREADABLE: file is not a database"
    assert out[3] == f"{other_db}: UNREADABLE: not a meshcomm journal (no such table: entries)"
    assert out[4] == f"{empty}: UNREADABLE: not a meshcomm journal (no such table: entries)"
    assert out[5] == f"{missing}: UNREADABLE: no such file"
    assert out[6] == f"{tmp_path}: UNREADABLE: not a regular file"
    assert len(out) == 7


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["journal", "verify"], ["journal", "verify", "--key", "abcd", "x"],
                 ["journal"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    capsys.readouterr()


def test_python_m_verify_is_the_same_command(tmp_path: Path) -> None:
    path, _ = make_journal(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "meshcomm.journal.verify", *args],
                              capture_output=True, text=True, timeout=60, env=env,
                              cwd=REPO, check=False)

    good = run(str(path))
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith(f"{path}: ok: {ENTRIES} entries")
    assert json.loads(run("--json", str(path)).stdout)[0]["verdict"] == "ok"
    sql(path, "UPDATE entries SET wall_s = 1 WHERE seq = 7")
    bad = run(str(path))
    assert bad.returncode == 1 and "first problem at entry 7" in bad.stdout
    assert run().returncode == 2
    assert "Traceback" not in bad.stderr + good.stderr


def test_unclosed_journal_on_read_only_media_is_read_whole(
        small_disk: SmallDisk, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A journal collected from a node that never closed it (entries still in its -wal
    file, no -shm) on a read-only medium: verified from a copy, every entry counted."""
    ident, _ = load_or_create_identity(tmp_path)
    live = tmp_path / "journal.sqlite"
    store = JournalStore.open(live, ident.node_id)
    for i in range(40):
        store.append(JournalEventType.NEIGHBOUR_UP, {"i": i}, float(i), 1.7e9 + i)
    store.checkpoint(ident.sign, 40.0, 1.7e9 + 40)
    store.flush()
    wal = live.with_name("journal.sqlite-wal")
    assert wal.stat().st_size > 0                 # the entries are in the -wal file
    collected = small_disk.path / "n1.sqlite"
    collected.write_bytes(live.read_bytes())
    collected.with_name("n1.sqlite-wal").write_bytes(wal.read_bytes())
    store.close()
    small_disk.read_only()
    try:
        code, out = verify(capsys, "--key", ident.public_key.hex(), str(collected))
    finally:
        small_disk.read_write()
    assert code == 0
    assert out[0].startswith(f"{collected}: ok: 41 entries, 1 checkpoint(s) (signatures "
                             "verified")
