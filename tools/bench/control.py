"""Idle control traffic per node in the simulator: a 5-node chain and 50 nodes in one range.

    python tools/bench/control.py                      # both scenarios, this checkout
    python tools/bench/control.py --before /work/before13   # and the same run of that tree
    python tools/bench/control.py --no-trickle         # this code with fixed HELLO/digests

Issue 13 point 3: once the mesh is stable (no registration, no traffic), every frame on
the air is control traffic (HELLOs, digests, binding refreshes and their repairs). Each
scenario runs bare gossip nodes (as the runtime without SIP); after ``--settle`` simulated
seconds, every frame transmitted during ``--window`` seconds is counted once per
transmission (a broadcast is one transmission on a radio), by message type. Printed per
node per second: payload bytes, and "IP" bytes = payload + 48 per frame (IPv6 + UDP
headers, as tools/bench/airtime.py counts; note airtime.py counts a frame once per link it
leaves on, this once per transmission). The dense case is compared with 1% of a 1 Mbit/s
channel (1250 B/s) per node and for the sum over all nodes.

Cold start (``--cold N``): a 5-node chain powered on at once (within 1 s), each node
registering 2-4 s after start as in every simulation; seconds until n0 holds a route to
n4 at 4 hops (checked every 50 ms), over N seeds.

``--before DIR`` runs this script's scenarios with the code in DIR (its own defaults), in a
subprocess, and prints both side by side. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CODE = os.environ.get("MESHCOMM_CODE") or str(Path(__file__).resolve().parents[2])
sys.path.insert(0, _CODE)

from meshcomm.sim.engine import Simulator  # noqa: E402
from meshcomm.sim.scenario import ScenarioParams, build_topology, sim_config  # noqa: E402
from meshcomm.types import Datagram  # noqa: E402
from meshcomm.wire.envelope import parse_frame_untrusted  # noqa: E402

IP_UDP_HEADER_BYTES = 48
CHANNEL_BPS = 1_000_000
#: 1% of a 1 Mbit/s channel, bytes per second.
ONE_PERCENT_BPS = CHANNEL_BPS / 8 / 100
SCENARIOS: dict[str, dict[str, Any]] = {
    "chain5": {"topology": "chain", "nodes": 5, "radio_range": 0.2},
    "dense50": {"topology": "random", "nodes": 50, "radio_range": 10.0},
}


def _kind(data: bytes) -> str:
    try:
        return parse_frame_untrusted(data)[0].msg_type.name.lower()
    except Exception:   # any frame the decoder refuses (acks, media)
        return "other"


def measure(name: str, settle_s: float, window_s: float, seed: int, loss: float,
            trickle: bool | None) -> dict[str, Any]:
    """One scenario: frames and bytes by type in [settle_s, settle_s + window_s)."""
    spec = SCENARIOS[name]
    params = ScenarioParams(topology=spec["topology"], nodes=spec["nodes"], loss=loss,
                            radio_range=spec["radio_range"],
                            duration_s=settle_s + window_s, seed=seed)
    topo = build_topology(params)
    config = sim_config(params, topo)
    if trickle is not None:
        overlay = dataclasses.replace(config.settings.overlay, trickle=trickle)
        config.settings = dataclasses.replace(config.settings, overlay=overlay)
    sim = Simulator(config)
    frames: Counter[str] = Counter()
    sizes: Counter[str] = Counter()

    def tap(orig: Callable[[Datagram], None]) -> Callable[[Datagram], None]:
        def send(dgram: Datagram) -> None:
            if sim.now >= settle_s:
                kind = _kind(dgram.data)
                frames[kind] += 1
                sizes[kind] += len(dgram.data)
            orig(dgram)
        return send

    for node in sim.node_names():
        edge = sim.edge(node)
        edge.transmit = tap(edge.transmit)
    res = sim.run()
    n = spec["nodes"]
    total_frames, total_bytes = sum(frames.values()), sum(sizes.values())
    per_node = total_bytes / window_s / n
    ip_per_node = (total_bytes + IP_UDP_HEADER_BYTES * total_frames) / window_s / n
    return {"scenario": name, "nodes": n, "loss": loss, "settle_s": settle_s,
            "window_s": window_s, "coverage": res["coverage"],
            "payload_Bps_per_node": round(per_node, 1),
            "ip_Bps_per_node": round(ip_per_node, 1),
            "payload_Bps_sum": round(per_node * n, 1),
            "frames_per_s_per_node": round(total_frames / window_s / n, 3),
            "by_type_Bps_per_node": {k: round(v / window_s / n, 1)
                                     for k, v in sorted(sizes.items())}}


def cold_start(seeds: int) -> dict[str, Any]:
    """Seconds until n0 of a 5-chain holds a 4-hop route to n4, per seed."""
    took: list[float] = []
    for seed in range(1, seeds + 1):
        params = ScenarioParams(topology="chain", nodes=5, duration_s=30.0, seed=seed)
        sim = Simulator(sim_config(params, build_topology(params)))
        found: list[float] = []

        def poll(s: Simulator, found: list[float] = found) -> None:
            n0, n4 = s.core("n0"), s.core("n4")
            if not found and n0 is not None and n4 is not None:
                route = n0.overlay.routes.get(n4.node_id, s.now)
                if route is not None and route.hops == 4:
                    found.append(s.now)
        for k in range(1, 600):
            sim.call_at(k * 0.05, poll)
        sim.run()
        took.append(found[0] if found else float("inf"))
    ordered = sorted(took)
    return {"seeds": seeds, "took_s": [round(t, 2) for t in took],
            "median_s": round(ordered[len(ordered) // 2], 2),
            "max_s": round(ordered[-1], 2)}


def _print(label: str, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        line = (f"{label:>8} {r['scenario']:>8} | payload {r['payload_Bps_per_node']:>8.1f} B/s"
                f"/node  IP {r['ip_Bps_per_node']:>8.1f} B/s/node  sum {r['payload_Bps_sum']:>9.1f}"
                f" B/s  frames {r['frames_per_s_per_node']:>6.3f}/s/node  cov "
                f"{r['coverage']:.4f}")
        if r["scenario"] == "dense50":
            line += (f"  | 1% of 1 Mbit/s = {ONE_PERCENT_BPS:.0f} B/s: per node "
                     f"{'yes' if r['ip_Bps_per_node'] <= ONE_PERCENT_BPS else 'NO'}, sum "
                     f"{'yes' if r['payload_Bps_sum'] <= ONE_PERCENT_BPS else 'NO'}")
        print(line, flush=True)
        print(f"{'':>8} {'':>8} | by type (payload B/s/node): {r['by_type_Bps_per_node']}",
              flush=True)


def _print_cold(label: str, cold: dict[str, Any]) -> None:
    print(f"{label:>8} cold start, 5-chain, n0 -> n4 route at 4 hops: median "
          f"{cold['median_s']} s, max {cold['max_s']} s over {cold['seeds']} seeds "
          f"{cold['took_s']}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settle", type=float, default=60.0, help="simulated s before the window")
    ap.add_argument("--window", type=float, default=300.0, help="simulated s measured")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    ap.add_argument("--no-trickle", action="store_true", help="this code, Trickle off")
    ap.add_argument("--before", type=Path, help="also run the code in this tree")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--cold", type=int, default=10, help="cold-start seeds (0: none)")
    args = ap.parse_args()
    names = args.scenario or list(SCENARIOS)
    trickle = False if args.no_trickle else None
    rows = [measure(n, args.settle, args.window, args.seed, args.loss, trickle) for n in names]
    out: dict[str, Any] = {"bench": "control", "code": _CODE, "rows": rows}
    if args.cold:
        out["cold_start"] = cold_start(args.cold)
    if not args.json:
        _print("after" if args.before else "this", rows)
        if args.cold:
            _print_cold("after" if args.before else "this", out["cold_start"])
    if args.before is not None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--json", "--settle",
               str(args.settle), "--window", str(args.window), "--seed", str(args.seed),
               "--loss", str(args.loss), "--cold", str(args.cold)] + [
                   a for n in names for a in ("--scenario", n)]
        env = {**os.environ, "MESHCOMM_CODE": str(args.before.resolve())}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                              cwd=args.before)
        before = json.loads(done.stdout.strip().splitlines()[-1])
        out["before"] = before
        if not args.json:
            _print("before", before["rows"])
            if "cold_start" in before:
                _print_cold("before", before["cold_start"])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
