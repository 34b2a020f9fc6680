"""Done-when of issue 11: over a seeded set of 1,000 random tamperings of journal copies
(edit, delete, reorder, truncate, and a device re-signing a rewritten history), every one
is detected and named by device and entry; the untampered set reports no problem.

The honest set (built once): five devices' real journal files (JournalStore, SQLite), each
beside its ``public.key`` as ``ctl collect`` lays them out, from a seeded incident
(tests/export/journals.py): SIP MESSAGEs and their 200s journaled ``to-mesh`` by the
sender and ``from-mesh`` by the receiver with the envelope id, signed checkpoints that the
other devices witness (``journal.witnessed``), and a finale in which every device's last
checkpoint is witnessed by all the others. Device 0 also has an older copy of its journal
(a prefix, as collected mid-incident).

Each tampering copies one device's journal file and edits the copy's SQLite rows, as
someone holding the file would, then runs the export (meshcomm.export.pipeline.export)
over the set with that copy in place of the device's: each journal verified alone (chain,
checkpoints with the key), the copies of a device compared (forks), the clocks estimated
from the send/receipt pairs, and the cross-journal checks (crosscheck.CrossCheck).
Expected, exactly (device, entry):

* edit (an entry's data, wall or monotonic time or type; with or without its hash
  recomputed): the verifier names the entry (its hash, or its successor's link);
* delete (a row): the verifier names the first missing entry;
* reorder (two rows within 8 of each other swapped): the verifier names the first;
* truncate (every row after L): the copy verifies alone, but the others witnessed a signed
  checkpoint past L: ``truncated`` at L + 1 (device 0: the first entry neither of its
  copies holds, the export keeping the longer copy);
* re-sign (the device itself rewrites its history from entry e: an edit, a removal or a
  swap, then chains it again and signs each checkpoint again, so the copy verifies
  alone): the witnesses hold its signed checkpoints, and the first witnessed head at or
  after e is a ``fork`` (device 0, when its older copy reaches e: the copies fork at e).

No finding may name another device. What cannot be detected is not drawn, and that is
the limit of the design, not of the test: the finale's last entries (the witness records
after a device's last witnessed checkpoint and the checkpoint over them) are remembered by
no one else, so cutting them (a truncation at or after the last witnessed head, or
deleting the final row), rewriting them with a recomputed hash where no successor links to
them (the final row), or re-signing a history rewritten only there, reads exactly like a
copy taken a moment earlier or a different, valid end. Every other point of every device's
journal is drawn uniformly.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshcomm.export.pipeline import export
from meshcomm.export.reader import PUBLIC_KEY_FILE, entries
from meshcomm.journal.codec import compute_entry_hash, decode_data_untrusted, normalize_data
from meshcomm.journal.store import ROW_COLUMNS, JournalStore, decode_row_untrusted
from meshcomm.security.identity import Identity
from tests.export.journals import build_incident, plain, rechain

SEED = 20261206
TAMPERINGS = 1_000
KINDS = ("edit", "delete", "reorder", "truncate", "resign")
IDS = [Identity(bytes([0x40 + i]) * 32) for i in range(5)]
HEX = [ident.node_id.hex() for ident in IDS]
Finding = tuple[str, int, str]


@dataclass
class Honest:
    root: Path
    paths: dict[str, list[Path]]                 # device -> its copies' journal files
    witnessed: list[list[int]]                   # per device: witnessed heads, sorted
    lengths: list[int]                           # per device: entries in its journal
    older: int                                   # entries in device 0's older copy


def _device_dir(root: Path, ident: Identity, name: str | None = None) -> Path:
    directory = root / (name or ident.node_id.hex())
    directory.mkdir(parents=True)
    (directory / PUBLIC_KEY_FILE).write_text(ident.public_key.hex() + "\n")
    return directory


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Honest:
    root = tmp_path_factory.mktemp("honest")
    dirs = [_device_dir(root / "set", ident) for ident in IDS]
    stores = [JournalStore.open(d / "journal.sqlite", ident.node_id)
              for d, ident in zip(dirs, IDS, strict=True)]
    try:
        incident = build_incident(IDS, stores, seed=SEED, steps=100)
    finally:
        for store in stores:
            store.close()
    witnessed = [sorted(heads) for heads in incident.witnessed]
    older = witnessed[0][len(witnessed[0]) // 2] + 1        # collected mid-incident
    copy = _device_dir(root / "earlier", IDS[0]) / "journal.sqlite"
    shutil.copyfile(dirs[0] / "journal.sqlite", copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("DELETE FROM entries WHERE seq > ?", (older,))
    conn.close()
    paths = {h: [d / "journal.sqlite"] for h, d in zip(HEX, dirs, strict=True)}
    paths[HEX[0]].append(copy)
    lengths = [len(list(entries(paths[h][0]))) for h in HEX]
    return Honest(root, paths, witnessed, lengths, older)


def findings(paths: list[Path], out: Path) -> set[Finding]:
    """What ``meshcomm export`` finds in these journals (data directories)."""
    return {(p.device, p.entry, p.kind)
            for p in export(paths, out, capture=False, report=False).problems}


def _inputs(honest: Honest, tampered: Path | None = None, device: int = -1) -> list[Path]:
    """The set's directories, device ``device``'s current copy replaced by ``tampered``."""
    return [tampered if tampered is not None and h == HEX[device] and i == 0
            else path.parent for h, paths in honest.paths.items()
            for i, path in enumerate(paths)]


def test_the_untampered_set_reports_no_problem(honest: Honest, tmp_path: Path) -> None:
    summary = export(_inputs(honest), tmp_path, capture=False, report=False)
    assert summary.problems == [] and summary.verified
    assert len(summary.devices) == len(IDS) and all(
        d["signed"] and d["merged"] and int(str(d["checkpoints"])) >= 3
        for d in summary.devices)
    assert summary.crosscheck["claims"] >= 30 and summary.crosscheck["sends"] >= 40


# ------------------------------------------------------------------ tampering the rows
def _rows(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute(f"SELECT {ROW_COLUMNS} FROM entries ORDER BY seq").fetchall()


def _rehash(row: list[object]) -> None:
    seq, mono, wall, node_id, type_name, data, prev_hash = row[:7]
    assert isinstance(seq, int) and isinstance(mono, float) and isinstance(wall, float)
    assert isinstance(node_id, bytes) and isinstance(type_name, str)
    assert isinstance(data, bytes) and isinstance(prev_hash, bytes)
    row[7] = compute_entry_hash(prev_hash, seq, mono, wall, node_id, type_name, data)


def _put(conn: sqlite3.Connection, row: list[object]) -> None:
    conn.execute("UPDATE entries SET mono_s = ?, wall_s = ?, node_id = ?, type = ?, "
                 "data = ?, prev_hash = ?, entry_hash = ? WHERE seq = ?", (*row[1:], row[0]))


def edit(conn: sqlite3.Connection, rng: random.Random, last: int) -> tuple[int, str]:
    seq = rng.randint(1, last)
    row = list(_rows(conn)[seq - 1])
    what = rng.choice(("data", "wall", "mono", "type"))
    if what == "data":
        raw = row[5]
        assert isinstance(raw, bytes)
        data = decode_data_untrusted(raw)
        data["edited"] = rng.randrange(1 << 30)
        row[5] = normalize_data(data)[1]
    elif what in ("wall", "mono"):
        column = 2 if what == "wall" else 1
        value = row[column]
        assert isinstance(value, float)
        row[column] = value + rng.choice((-1, 1)) * rng.uniform(0.001, 100.0)
    else:
        row[4] = "route.changed" if row[4] != "route.changed" else "note"
    rehashed = seq < last and rng.random() < 0.5      # the final row has no successor
    if rehashed:
        _rehash(row)
    _put(conn, row)
    return seq, f"{what}{' rehashed' if rehashed else ''}"


def delete(conn: sqlite3.Connection, rng: random.Random, last: int) -> tuple[int, str]:
    seq = rng.randint(1, last - 1)                    # the final row: a truncation
    conn.execute("DELETE FROM entries WHERE seq = ?", (seq,))
    return seq, "row"


def reorder(conn: sqlite3.Connection, rng: random.Random, last: int) -> tuple[int, str]:
    first = rng.randint(1, last - 1)
    second = rng.randint(first + 1, min(last, first + 8))
    rows = _rows(conn)
    a, b = list(rows[first - 1]), list(rows[second - 1])
    _put(conn, [first, *b[1:]])
    _put(conn, [second, *a[1:]])
    return first, f"swap {second - first} apart"


def truncate(conn: sqlite3.Connection, rng: random.Random, last_head: int) -> int:
    keep = rng.randint(0, last_head - 1)
    conn.execute("DELETE FROM entries WHERE seq > ?", (keep,))
    return keep


def resign(conn: sqlite3.Connection, rng: random.Random, ident: Identity,
           last_head: int) -> tuple[int, str]:
    """The device rewrites its history from a seq at or before its last witnessed head,
    chains it again and signs its checkpoints again."""
    journal = [decode_row_untrusted(row) for row in _rows(conn)]
    start = rng.randint(1, last_head)
    tail = plain(journal[start - 1:])
    what = rng.choice(("edit", "remove", "swap"))
    if what == "edit":
        kind, data, mono, wall = tail[0]
        tail[0] = (kind, {**data, "edited": True}, mono, wall + rng.uniform(0.001, 1.0))
    elif what == "remove":
        del tail[0]
    else:
        other = rng.randint(1, min(8, len(tail) - 1))
        tail[0], tail[other] = tail[other], tail[0]
    conn.execute("DELETE FROM entries WHERE seq >= ?", (start,))
    conn.executemany(
        f"INSERT INTO entries ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(e.seq, e.mono_s, e.wall_s, e.node_id, e.type, raw, e.prev_hash, e.entry_hash)
         for e, raw in rechain(ident, journal[:start - 1], tail)])
    return start, what


@dataclass(frozen=True)
class Tampering:
    number: int
    kind: str
    device: int
    variant: str
    expected: Finding


def _tamper(honest: Honest, conn: sqlite3.Connection, number: int, device: int,
            rng: random.Random) -> Tampering:
    kind = KINDS[number % len(KINDS)]
    last, last_head = honest.lengths[device], honest.witnessed[device][-1]
    older = honest.older if device == 0 else 0
    if kind == "truncate":
        keep = truncate(conn, rng, last_head)
        return Tampering(number, kind, device, f"keep {keep}",
                         (HEX[device], max(keep, older) + 1, "truncated"))
    if kind == "resign":
        start, variant = resign(conn, rng, IDS[device], last_head)
        if start <= older:
            return Tampering(number, kind, device, variant, (HEX[device], start, "fork"))
        first = next(h for h in honest.witnessed[device] if h >= start)
        return Tampering(number, kind, device, variant, (HEX[device], first, "fork"))
    seq, variant = {"edit": edit, "delete": delete, "reorder": reorder}[kind](
        conn, rng, last)
    return Tampering(number, kind, device, variant, (HEX[device], seq, ""))


def _tamperings(honest: Honest, work: Path) -> Iterator[tuple[Tampering, Path]]:
    rng = random.Random(SEED)
    targets = [_device_dir(work, ident) / "journal.sqlite" for ident in IDS]
    for number in range(TAMPERINGS):
        device = rng.randrange(len(IDS))
        target = targets[device]
        shutil.copyfile(honest.paths[HEX[device]][0], target)
        conn = sqlite3.connect(target)
        try:
            # the copy needs no durability (and no -wal file left for the readers)
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=OFF")
            with conn:
                tampering = _tamper(honest, conn, number, device, rng)
        finally:
            conn.close()
        yield tampering, target.parent


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """Where the tampered copies and the outputs go: memory when the machine has a tmpfs
    (2,000 fsyncs of outputs nobody reads are most of the time otherwise)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="meshcomm-tamper-") as place:
        yield Path(place)


def test_a_thousand_tamperings_are_each_named_by_device_and_entry(
        honest: Honest, scratch: Path) -> None:
    started = time.perf_counter()
    by_kind: Counter[str] = Counter()
    named_as: Counter[str] = Counter()
    variants: Counter[str] = Counter()
    for tampering, tampered in _tamperings(honest, scratch / "copies"):
        found = findings(_inputs(honest, tampered, tampering.device), scratch / "out")
        device, entry, kind = tampering.expected
        at = {k for d, e, k in found if (d, e) == (device, entry)}
        assert at, (tampering, sorted(found))
        assert not kind or kind in at, (tampering, sorted(found))
        assert {d for d, _, _ in found} == {device}, (tampering, sorted(found))
        by_kind[tampering.kind] += 1
        variants[f"{tampering.kind}:{tampering.variant.split()[0]}"] += 1
        named_as.update(f"{tampering.kind}->{k}" for k in at)
    elapsed = time.perf_counter() - started
    assert sum(by_kind.values()) == TAMPERINGS
    assert all(by_kind[kind] == TAMPERINGS // len(KINDS) for kind in KINDS)
    print(f"\n{TAMPERINGS} tamperings, all named by device and entry in {elapsed:.1f} s: "
          f"{dict(by_kind)}; named as {dict(sorted(named_as.items()))}; "
          f"variants {dict(sorted(variants.items()))}")
