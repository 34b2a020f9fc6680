"""Benchmark: journal collection over the mesh (``meshcomm ctl collect``, issue 11).

    python tools/bench/collect.py [--events 20000] [--hops 2] [--rate 16000] [--json]

Builds one device journal shaped like a node's (``tools/bench/export.py``'s builder: SIP
MESSAGE records with nine headers, overlay and binding records, signed checkpoints,
witnessed checkpoints), then

1. packs it into chunks exactly as a device answers pulls
   (``meshcomm.node.collect_serve.pack_chunk``): raw row bytes, bytes on the wire (chunk
   bodies), compression ratio, rows per chunk, wire bytes per 1000 rows;
2. runs real nodes in this process (``run_node`` on an in-memory radio, a chain of
   ``--hops`` radio hops from the command post to the device, whose data dir holds that
   journal) and times ``ctl collect`` through the control socket, with the device's
   ``[export] collect_rate_bytes_per_s`` at ``--rate``; then checks the copy verifies with
   the device's key.

Prints one line per figure (``--json``: one object).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from meshcomm.config import NodeConfig, config_with_overrides
from meshcomm.journal.store import ROW_COLUMNS
from meshcomm.journal.verify import verify_journal
from meshcomm.node.collect_serve import pack_chunk
from meshcomm.node.collect_wire import MAX_ROWS_PER_CHUNK, JournalPull, encode_chunk
from meshcomm.runtime.app import JOURNAL_FILE, NodeOptions, run_node
from meshcomm.runtime.control import CONTROL_SOCKET_FILE, control_request
from meshcomm.runtime.driver import NodeDriver
from meshcomm.runtime.handlers import NodeInfo
from meshcomm.security.keystore import load_or_create_identity
from radios.mem import drop_medium, get_medium
from tools.bench.export import build

FAST = {"overlay.hello_interval_s": 0.2, "overlay.neighbour_timeout_s": 1.0,
        "overlay.anti_entropy_interval_s": 0.4, "sip.udp_port": 0, "sip.tcp_port": 0}
POLL_S = 0.05
TIMEOUT_S = 600.0


def _rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    conn.text_factory = bytes
    try:
        return [tuple(r) for r in conn.execute(f"SELECT {ROW_COLUMNS} FROM entries "
                                               "ORDER BY seq")]
    finally:
        conn.close()


def _row_bytes(row: tuple[object, ...]) -> int:
    """What a row takes unpacked: seq and two floats, node id, type, data, two hashes."""
    return 24 + sum(len(v) for v in row[3:] if isinstance(v, bytes))


def pack_figures(journal: Path) -> dict[str, float]:
    rows = _rows(journal)
    raw = sum(_row_bytes(r) for r in rows)
    wire = chunks = done = 0
    started = time.perf_counter()
    while done < len(rows):
        head = len(rows)
        chunk, count = pack_chunk(JournalPull(done + 1, MAX_ROWS_PER_CHUNK),
                                  rows[done:done + MAX_ROWS_PER_CHUNK], head)
        wire += len(encode_chunk(chunk))
        chunks += 1
        done += count
    took = time.perf_counter() - started
    return {"rows": len(rows), "raw_bytes": raw, "wire_bytes": wire,
            "ratio": round(raw / wire, 2), "chunks": chunks,
            "rows_per_chunk": round(len(rows) / chunks, 1),
            "wire_bytes_per_1000_rows": round(wire * 1000 / len(rows)),
            "pack_rows_per_s": round(len(rows) / took)}


async def _collect(device_dir: Path, post_dir: Path, out: Path, hops: int,
                   rate: int) -> dict[str, object]:
    post_id = load_or_create_identity(post_dir)[0].node_id.hex()
    medium_name = f"bench-{uuid.uuid4().hex[:8]}"
    medium = get_medium(medium_name, full_mesh=False)
    stations = [f"s{i}" for i in range(hops + 1)]
    medium.connect_chain(stations)
    dirs = [post_dir] + [post_dir.parent / f"relay{i}" for i in range(1, hops)] + [device_dir]
    up: dict[int, NodeDriver] = {}

    def ready(i: int) -> Callable[[NodeDriver, NodeInfo], None]:
        def cb(driver: NodeDriver, _info: NodeInfo) -> None:
            up[i] = driver
        return cb

    def options(i: int) -> NodeOptions:
        cfg = config_with_overrides(NodeConfig(), {
            **FAST, "node.name": f"n{i}", "export.collectors": [post_id],
            "export.collect_rate_bytes_per_s": rate})
        return NodeOptions(config=cfg, data_dir=dirs[i],
                           radio_specs=(f"mem:{medium_name}/{stations[i]}",),
                           hostname="bench", shutdown_grace_s=0.1, seed=i,
                           register_delay_s=0.1)

    def ctl(i: int, cmd: str, **args: object) -> object:
        return control_request(dirs[i] / CONTROL_SOCKET_FILE, cmd, timeout_s=30.0, **args)

    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(run_node(options(i), ready(i))) for i in range(hops + 1)]
            while len(up) < hops + 1 or not up[0].core.collect or \
                    len(up[0].core.collect.reachable(up[0].now())) < hops:
                await asyncio.sleep(POLL_S)
            started = time.perf_counter()
            status = await asyncio.to_thread(ctl, 0, "collect", action="start", out=str(out))
            while isinstance(status, dict) and status["running"]:
                if time.perf_counter() - started > TIMEOUT_S:
                    raise TimeoutError("collection did not finish")
                await asyncio.sleep(POLL_S)
                status = await asyncio.to_thread(ctl, 0, "collect", action="status")
            took = time.perf_counter() - started
            for i in range(hops + 1):
                await asyncio.to_thread(ctl, i, "stop")
            for task in tasks:
                await task
    finally:
        drop_medium(medium_name)
    assert isinstance(status, dict)
    device_hex = load_or_create_identity(device_dir)[0].node_id.hex()
    device = next(d for d in status["devices"] if d["node"] == device_hex)
    return {"seconds": round(took, 2), "rows": device["rows"],
            "wire_bytes": device["wire_bytes"], "complete": device["complete"],
            "rows_per_s": round(device["rows"] / took), "error": device["error"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--hops", type=int, default=2)
    parser.add_argument("--rate", type=int, default=16_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meshcomm-collect-bench-") as tmp:
        root = Path(tmp)
        (root / "built").mkdir()
        build(root / "built", 2, args.events * 2, args.seed)
        device_dir = root / "dev"          # a short path: the control socket's limit
        sorted(p for p in (root / "built").iterdir() if p.is_dir())[0].rename(device_dir)
        packed = pack_figures(device_dir / JOURNAL_FILE)
        run = asyncio.run(_collect(device_dir, root / "post", root / "out", args.hops,
                                   args.rate))
        node = load_or_create_identity(device_dir)[0]
        report = verify_journal(root / "out" / node.node_id.hex() / JOURNAL_FILE,
                                node.public_key)
        result = {"pack": packed, "collect": {**run, "hops": args.hops, "rate": args.rate,
                                              "copy_verified": report.ok}}
    if args.json:
        print(json.dumps(result))
    else:
        for section, figures in result.items():
            print(section + ": " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    return 0 if result["collect"]["complete"] and result["collect"]["copy_verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
