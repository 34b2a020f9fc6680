"""Benchmark: ``meshcomm export`` over many devices' journals (issue 11).

    python tools/bench/export.py [--devices 100] [--events 1000000] [--seed 1] [--json]

Builds ``--devices`` journals (real SQLite journal files, each with its key, checkpoints
every 1,000 entries) holding ``--events`` entries in all: mostly overlay and gateway
records, and SIP MESSAGEs sent to a random other device and journaled by both (so the
clocks are estimated; each device's clock is off by up to an hour). Then runs the export
(verify, forks, clocks, merge, JSONL and CSV) in this one process and prints events/s and
the peak memory (ru_maxrss) grown while exporting. Target: 1,000,000 events from 100
devices in at most 60 s on one core, with bounded memory. Building the journals is not
timed.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from meshcomm.export.pipeline import export
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import SipMessageSeen
from meshcomm.journal.store import JournalStore
from meshcomm.security.identity import Identity
from meshcomm.security.keystore import IDENTITY_FILE, write_key_file

TARGET_S = 60.0
CHECKPOINT_EVERY = 1000
SIP_SHARE = 0.3


def _sip(direction: str, peer: Identity, call_id: str) -> JournalRecord:
    return JournalRecord.of(SipMessageSeen(
        direction=direction, method="MESSAGE", status=None, call_id=call_id, cseq=1,
        from_aor="sip:x@bench", to_aor="sip:y@bench", peer=peer.node_id[:8].hex() + ".mesh",
        hops=2))


def build(root: Path, devices: int, events: int, rng: random.Random) -> list[Path]:
    """The journals, one data dir per device; returns the dirs."""
    ids = [Identity(rng.randbytes(32)) for _ in range(devices)]
    skews = [rng.uniform(-3600.0, 3600.0) for _ in range(devices)]
    dirs = []
    stores = []
    for ident in ids:
        d = root / ident.node_id[:4].hex()
        d.mkdir()
        write_key_file(d / IDENTITY_FILE, ident)
        stores.append(JournalStore.open(d / "journal.sqlite", ident.node_id))
        dirs.append(d)
    t, written, call = 1_800_000_000.0, 0, 0
    while written < events:
        t += rng.expovariate(events / 3600.0)
        i = rng.randrange(devices)
        if rng.random() < SIP_SHARE and written + 2 <= events:
            j = (i + 1 + rng.randrange(devices - 1)) % devices
            call += 1
            cid = f"c{call}"
            stores[i].append_record(_sip("to-mesh", ids[j], cid), t, t + skews[i])
            delay = rng.uniform(0.005, 0.5)
            stores[j].append_record(_sip("from-mesh", ids[i], cid), t + delay,
                                    t + delay + skews[j])
            written += 2
        else:
            stores[i].append("route.changed", {"dst": "ab" * 32, "hops": 2}, t, t + skews[i])
            written += 1
        if written % CHECKPOINT_EVERY == 0:
            for k, store in enumerate(stores):
                store.checkpoint(ids[k].sign, t, t + skews[k])
                store.flush()
    for k, store in enumerate(stores):
        store.checkpoint(ids[k].sign, t, t + skews[k])
        store.close()
    return dirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meshcomm-bench-export-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        started = time.monotonic()
        dirs = build(root / "in", args.devices, args.events, random.Random(args.seed))
        built_s = time.monotonic() - started
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        summary = export(dirs, root / "out")
        took = time.monotonic() - started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"bench": "export", "devices": args.devices, "events": summary.events,
              "verified": summary.verified, "exchanges": summary.exchanges,
              "export_s": round(took, 2), "events_per_s": round(summary.events / took),
              "peak_rss_mib": round(rss_after / 1024, 1),
              "rss_growth_mib": round((rss_after - rss_before) / 1024, 1),
              "build_s": round(built_s, 1), "target_s": TARGET_S,
              "met": took <= TARGET_S * summary.events / 1_000_000 and summary.verified}
    if not args.json:
        print(f"export of {summary.events} events from {args.devices} devices: {took:.1f} s "
              f"({result['events_per_s']} events/s), peak RSS {result['peak_rss_mib']} MiB "
              f"(+{result['rss_growth_mib']} MiB while exporting), {summary.exchanges} "
              f"send/receive pairs, verified {summary.verified}")
    print(json.dumps(result))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
