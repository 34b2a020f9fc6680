"""The export streams (meshcomm/export/pipeline.py): what it holds in Python objects stays
a small fraction of the journals it reads and the timeline it writes (one batch of rows
per device in the merge, compact pairing tables), so memory does not follow the input's
length. tools/bench/export.py measures the process at a million events."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

from meshcomm.export.pipeline import export
from meshcomm.journal.store import JournalStore
from meshcomm.security.identity import Identity

DEVICES = 10
PER_DEVICE = 2_000


def _journals(root: Path) -> list[Path]:
    rng = random.Random(5)
    ids = [Identity(bytes([0x70 + i]) * 32) for i in range(DEVICES)]
    stores = []
    for ident in ids:
        (root / ident.node_id.hex()).mkdir(parents=True)
        (root / ident.node_id.hex() / "public.key").write_text(ident.public_key.hex() + "\n")
        stores.append(JournalStore.open(root / ident.node_id.hex() / "journal.sqlite",
                                        ident.node_id))
    t = 1_800_000_000.0
    for n in range(DEVICES * PER_DEVICE // 2):
        t += 0.01
        i, j = rng.sample(range(DEVICES), 2)
        env = rng.randbytes(16).hex()
        headers = [["Via", f"SIP/2.0/UDP 10.0.0.{i}:5060;branch=z9hG4bK{n}"]] * 8
        for k, (who, other, direction) in enumerate(((i, j, "to-mesh"), (j, i, "from-mesh"))):
            stores[who].append("sip.message", {
                "dir": direction, "method": "MESSAGE", "status": None, "call_id": f"c{n}",
                "cseq": 1, "from": "sip:a@x", "to": "sip:b@x", "hops": 1, "env": env,
                "peer": ids[other].node_id[:8].hex() + ".mesh", "headers": headers},
                t + k * 0.05, t + k * 0.05)
        if n % 500 == 0:
            for store, ident in zip(stores, ids, strict=True):
                store.checkpoint(ident.sign, t, t)
                store.flush()
    for store, ident in zip(stores, ids, strict=True):
        store.checkpoint(ident.sign, t, t)
        store.close()
    return [root / ident.node_id.hex() for ident in ids]


def test_the_export_holds_a_small_fraction_of_what_it_streams(tmp_path: Path) -> None:
    dirs = _journals(tmp_path / "in")
    out = tmp_path / "out"
    tracemalloc.start()
    try:
        summary = export(dirs, out, capture=False, report=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    written = (out / "timeline.jsonl").stat().st_size
    assert summary.verified and summary.events >= DEVICES * PER_DEVICE
    assert summary.exchanges >= DEVICES * PER_DEVICE // 2
    assert written > 10 * 2**20
    assert peak < written / 4, (peak, written)        # 3.3 MB of 17.9 here (1024-row
    # batches in the merge held 14 MB)
