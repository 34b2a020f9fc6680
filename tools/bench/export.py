"""Benchmark: ``meshcomm export`` over many devices' journals (issue 11).

    python tools/bench/export.py [--devices 100] [--events 1000000] [--seed 1]
                                 [--inputs DIR] [--profile FILE] [--json]

Builds ``--devices`` journals (real SQLite journal files, each with its key) holding about
``--events`` entries in all over one simulated hour, shaped like a node's journal:

* SIP MESSAGEs and their 200 OKs between random pairs of devices, journaled by both
  gateways as a node does (``sip.message`` with the start line, nine headers, body length
  and hash, and the envelope id on both sides), each device's wall clock off by up to an
  hour;
* overlay and binding records (``route.changed``, ``neighbour.up``, ``binding.learned``);
* a signed checkpoint per device every ``CHECKPOINT_INTERVAL_S`` of simulated time (the
  runtime's interval), and after each round every device journals two other devices'
  checkpoints as witnessed (``journal.witnessed``, with the sealing time of the HELLO
  that carried it, a clock pair too).

Then it runs the export (verify, forks, clocks, merge, ``timeline.jsonl`` and
``timeline.csv``) in this one process and prints events/s, the process's peak memory
(ru_maxrss; the journals are built in a child process, so the figure is the export's)
and the memory before the export. Target: 1,000,000 events from 100 devices in at most
60 s on one core, with bounded memory. Building the journals is not timed; ``--inputs
DIR`` keeps them in DIR (and uses them as they are when DIR already holds them).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from meshcomm.export.pipeline import export
from meshcomm.journal.store import JournalStore
from meshcomm.runtime.app import CHECKPOINT_INTERVAL_S
from meshcomm.security.identity import Identity
from meshcomm.security.keystore import IDENTITY_FILE, write_key_file

TARGET_S = 60.0
TARGET_EVENTS = 1_000_000
#: Share of the draws that are a MESSAGE and its 200 OK (four journal entries).
SIP_SHARE = 0.12
#: Simulated time the events are spread over (seconds).
SPAN_S = 3600.0
FLUSH_EVERY = 2000
WITNESSES_PER_ROUND = 2
BUILT_MARK = "built.json"
#: Changes when the journals built change shape (a kept DIR of another shape is refused).
FORMAT = 2


def _sip(direction: str, peer: Identity, call: int, status: int | None, wall: float,
         env: str) -> dict[str, object]:
    method = "MESSAGE"
    body_len = 0 if status is not None else 64 + call % 200
    start = f"SIP/2.0 {status} OK" if status is not None else f"{method} sip:bob@bench SIP/2.0"
    headers = [
        ["Via", f"SIP/2.0/UDP 10.0.0.{call % 250}:5060;branch=z9hG4bK{call:08x};rport"],
        ["Max-Forwards", "70"],
        ["From", f"<sip:alice{call % 40}@bench>;tag={call * 7919 % 10**9:09d}"],
        ["To", f"<sip:bob{call % 37}@bench>" + (";tag=aa7" if status else "")],
        ["Call-ID", f"{call:x}-{int(wall)}@bench"], ["CSeq", f"1 {method}"],
        ["User-Agent", "baresip v3.10.1"], ["Content-Type", "text/plain"],
        ["Content-Length", str(body_len)]]
    data: dict[str, object] = {
        "dir": direction, "method": method, "status": status,
        "call_id": f"{call:x}-{int(wall)}@bench", "cseq": 1,
        "from": f"sip:alice{call % 40}@bench", "to": f"sip:bob{call % 37}@bench",
        "peer": peer.node_id[:8].hex() + ".mesh", "hops": 2, "start": start,
        "headers": headers, "env": env}
    if body_len:
        data["body_len"] = body_len
        data["body_sha256"] = hashlib.sha256(str(call).encode()).hexdigest()
    return data


class _Builder:
    def __init__(self, root: Path, devices: int, rng: random.Random) -> None:
        self.rng = rng
        self.ids = [Identity(rng.randbytes(32)) for _ in range(devices)]
        self.skews = [rng.uniform(-3600.0, 3600.0) for _ in range(devices)]
        self.stores = []
        for ident in self.ids:
            d = root / ident.node_id.hex()
            d.mkdir()
            write_key_file(d / IDENTITY_FILE, ident)
            self.stores.append(JournalStore.open(d / "journal.sqlite", ident.node_id))
        self.written = 0

    def add(self, i: int, t: float, type_name: str, data: dict[str, object]) -> None:
        self.stores[i].append(type_name, data, t, t + self.skews[i])
        self.written += 1
        if self.written % FLUSH_EVERY == 0:
            for store in self.stores:
                store.flush()

    def message(self, t: float, call: int) -> None:
        """A MESSAGE from i to j and j's 200 OK, each journaled by both gateways."""
        rng, n = self.rng, len(self.ids)
        i = rng.randrange(n)
        j = (i + 1 + rng.randrange(n - 1)) % n
        for k, (src, dst, status) in enumerate(((i, j, None), (j, i, 200))):
            env = rng.randbytes(16).hex()
            sent = t + k * rng.uniform(0.01, 0.2)
            got = sent + rng.uniform(0.005, 0.5)
            self.add(src, sent, "sip.message",
                     _sip("to-mesh", self.ids[dst], call, status, sent, env))
            self.add(dst, got, "sip.message",
                     _sip("from-mesh", self.ids[src], call, status, got, env))

    def other(self, t: float) -> None:
        i = self.rng.randrange(len(self.ids))
        other = self.ids[self.rng.randrange(len(self.ids))].node_id.hex()
        kind = self.rng.randrange(3)
        if kind == 0:
            self.add(i, t, "route.changed", {"dst": other, "next_hop": other, "hops": 2,
                                             "metric": 40})
        elif kind == 1:
            self.add(i, t, "neighbour.up", {"neighbour": other, "addr": "10.0.0.9:7000",
                                            "role": "handset"})
        else:
            self.add(i, t, "binding.learned", {
                "aor": f"sip:bob{self.written % 37}@bench", "node": other, "seq": 3,
                "state": "active", "lifetime_s": 3600, "via": "", "record": b"\x01" * 16,
                "suppressed": 0})

    def checkpoints(self, t: float) -> None:
        heads = []
        for k, store in enumerate(self.stores):
            entry = store.checkpoint(self.ids[k].sign, t, t + self.skews[k])
            self.written += 1
            heads.append(entry)
        for k in range(len(self.stores)):
            for j in self.rng.sample(range(len(self.stores)), WITNESSES_PER_ROUND):
                head = heads[j]
                if j == k or head is None:
                    continue
                self.add(k, t + 0.5, "journal.witnessed", {
                    "node": self.ids[j].node_id.hex(), "seq": head.data["head_seq"],
                    "head": bytes(head.data["head_hash"]).hex(),  # type: ignore[arg-type]
                    "sig": bytes(head.data["signature"]).hex(),  # type: ignore[arg-type]
                    "sent_wall": t + 0.2 + self.skews[j]})     # j sealed its HELLO then

    def close(self) -> None:
        for store in self.stores:
            store.close()


def build(root: Path, devices: int, events: int, seed: int) -> int:
    """The journals, one directory per device named by its node id; returns the number
    of entries written."""
    rng = random.Random(seed)
    builder = _Builder(root, devices, rng)
    rate = events / SPAN_S
    t, call, next_checkpoint = 1_800_000_000.0, 0, 1_800_000_000.0 + CHECKPOINT_INTERVAL_S
    while builder.written < events:
        t += rng.expovariate(rate)
        if t >= next_checkpoint:
            builder.checkpoints(next_checkpoint)
            next_checkpoint += CHECKPOINT_INTERVAL_S
        if rng.random() < SIP_SHARE:
            call += 1
            builder.message(t, call)
        else:
            builder.other(t)
    builder.checkpoints(t + 1.0)
    builder.close()
    return builder.written


def _build_child(root: str, devices: int, events: int, seed: int) -> None:
    written = build(Path(root), devices, events, seed)
    (Path(root) / BUILT_MARK).write_text(json.dumps({"devices": devices, "events": events,
                                                     "seed": seed, "format": FORMAT,
                                                     "written": written}))


def _inputs(root: Path, args: argparse.Namespace) -> float:
    """Build the journals under ``root`` in a child process (unless already there)."""
    mark = root / BUILT_MARK
    wanted = {"devices": args.devices, "events": args.events, "seed": args.seed,
              "format": FORMAT}
    if mark.is_file():
        built = json.loads(mark.read_text())
        if {k: built.get(k) for k in wanted} == wanted:
            return 0.0
        raise SystemExit(f"{root} holds journals built with {built}, not {wanted}")
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    child = multiprocessing.get_context("spawn").Process(
        target=_build_child, args=(str(root), args.devices, args.events, args.seed))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"building the journals failed (exit {child.exitcode})")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--events", type=int, default=TARGET_EVENTS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--inputs", type=Path, help="keep (or reuse) the journals here")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the export here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meshcomm-bench-export-") as tmp:
        root = args.inputs or Path(tmp) / "in"
        built_s = _inputs(root, args)
        dirs = sorted(p for p in root.iterdir() if p.is_dir())
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        profiler = cProfile.Profile() if args.profile else None
        started = time.monotonic()
        cpu_started = time.process_time()
        if profiler is not None:
            profiler.enable()
        summary = export(dirs, Path(tmp) / "out", capture=False, report=False)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        took = time.monotonic() - started
        cpu = time.process_time() - cpu_started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out_mib = sum(f.stat().st_size for f in (Path(tmp) / "out").iterdir()) / 2**20
    result = {"bench": "export", "devices": args.devices, "events": summary.events,
              "verified": summary.verified, "exchanges": summary.exchanges,
              "export_s": round(took, 2), "cpu_s": round(cpu, 2),
              "events_per_s": round(summary.events / took),
              "peak_rss_mib": round(rss_after / 1024, 1),
              "rss_before_export_mib": round(rss_before / 1024, 1),
              "output_mib": round(out_mib, 1), "build_s": round(built_s, 1),
              "target_s": TARGET_S,
              "met": took <= TARGET_S * summary.events / TARGET_EVENTS and summary.verified}
    if not args.json:
        print(f"export of {summary.events} events from {args.devices} devices: {took:.1f} s "
              f"({result['events_per_s']} events/s, {cpu:.1f} s CPU), peak RSS "
              f"{result['peak_rss_mib']} MiB ({result['rss_before_export_mib']} MiB before "
              f"the export), {summary.exchanges} send/receive pairs, {out_mib:.0f} MiB "
              f"written, verified {summary.verified}")
    print(json.dumps(result))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
