"""Gossip overlay against naive flooding, side by side in one run, plus simulator speed.

    python tools/bench/gossip.py            # 50/100/200 nodes x 0/10/20 % loss, then speed
    python tools/bench/gossip.py --quick    # 50/100 nodes x 0/10 % loss, shorter speed run

Prints a table and, last, one JSON object with every figure (machine-readable). Targets
(issue 2): overlay coverage >= 0.999 with at most 0.6 of flooding's binding frames per
announcement; 200 nodes for 600 simulated seconds within 60 s of wall time on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import ScenarioParams, build_topology, sim_config

COVERAGE_TARGET = 0.999
RATIO_TARGET = 0.6
SPEED_NODES, SPEED_SIM_S, SPEED_TARGET_WALL_S = 200, 600.0, 60.0


def run_pair(nodes: int, loss: float, duration_s: float, seed: int) -> dict[str, object]:
    params = ScenarioParams(topology="random", nodes=nodes, loss=loss, duration_s=duration_s,
                            seed=seed)
    topo = build_topology(params)
    row: dict[str, object] = {"nodes": nodes, "loss": loss, "diameter": topo.diameter()}
    for mode in ("overlay", "flood"):
        started = time.process_time()
        res = Simulator(sim_config(params, topo, baseline=None if mode == "overlay"
                                   else "flood")).run()
        conv = res["convergence_s"]
        assert isinstance(conv, dict)
        row[mode] = {"coverage": res["coverage"], "tx_per_binding":
                     res["transmissions_per_binding"], "conv_max_s": conv["max"],
                     "conv_p99_s": conv["p99"], "frames": res["frames_total"],
                     "cpu_s": round(time.process_time() - started, 2)}
    ours, flood = row["overlay"], row["flood"]
    assert isinstance(ours, dict) and isinstance(flood, dict)
    row["tx_ratio"] = round(float(ours["tx_per_binding"]) / max(1e-9,
                            float(flood["tx_per_binding"])), 3)
    row["pass"] = (float(ours["coverage"]) >= COVERAGE_TARGET
                   and float(row["tx_ratio"]) <= RATIO_TARGET)
    return row


def speed(nodes: int, sim_s: float, seed: int) -> dict[str, object]:
    params = ScenarioParams(topology="random", nodes=nodes, loss=0.1, duration_s=sim_s,
                            seed=seed)
    config = sim_config(params)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    res = Simulator(config).run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"nodes": nodes, "simulated_s": sim_s, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "simulated_per_wall": round(sim_s / wall, 2),
            "coverage": res["coverage"], "pass": cpu <= SPEED_TARGET_WALL_S}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--duration", type=float, default=60.0, help="simulated s per pair")
    args = ap.parse_args()
    sizes, losses = ((50, 100), (0.0, 0.1)) if args.quick else ((50, 100, 200), (0.0, 0.1, 0.2))
    rows = []
    print(f"{'nodes':>5} {'loss':>5} {'diam':>4} | {'overlay cov':>11} {'tx/bind':>8} "
          f"{'conv max':>8} | {'flood cov':>9} {'tx/bind':>8} | {'ratio':>6}  ok")
    for n in sizes:
        for loss in losses:
            r = run_pair(n, loss, args.duration, args.seed)
            o, f = r["overlay"], r["flood"]
            assert isinstance(o, dict) and isinstance(f, dict)
            print(f"{n:>5} {loss:>5.0%} {r['diameter']:>4} | {o['coverage']:>11.4f} "
                  f"{o['tx_per_binding']:>8.1f} {o['conv_max_s']:>7.2f}s | "
                  f"{f['coverage']:>9.4f} {f['tx_per_binding']:>8.1f} | {r['tx_ratio']:>6.3f}"
                  f"  {'yes' if r['pass'] else 'NO'}", flush=True)
            rows.append(r)
    sp = speed(SPEED_NODES, SPEED_SIM_S / (4 if args.quick else 1), args.seed)
    print(f"\nspeed: {sp['nodes']} nodes x {sp['simulated_s']:.0f} simulated s in "
          f"{sp['wall_s']} s wall ({sp['cpu_s']} s CPU on one core): "
          f"{sp['simulated_per_wall']}x real time; target <= {SPEED_TARGET_WALL_S:.0f} s: "
          f"{'yes' if sp['pass'] else 'NO'}")
    print(json.dumps({"bench": "gossip", "seed": args.seed, "pairs": rows, "speed": sp}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
