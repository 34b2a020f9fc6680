"""Gossip overlay against naive flooding, side by side in one run, plus simulator speed.

    python tools/bench/gossip.py            # 50/100/200 nodes x 0/10/20 % loss, then speed
    python tools/bench/gossip.py --quick    # 50/100 nodes x 0/10 % loss, shorter speed run
    python tools/bench/gossip.py --speed-only         # only the two speed runs
    python tools/bench/gossip.py --incident --seed 3  # also issue 9's whole incident

Prints a table and, last, one JSON object with every figure (machine-readable). Targets
(issue 2): overlay coverage >= 0.999 with at most 0.6 of flooding's binding frames per
announcement; 200 nodes for 600 simulated seconds within 60 s of wall time on one core.
(Issue 9): the same run with whole nodes -- gateways, store-and-forward, media relays, a
simulated SIP client each, 1 MESSAGE per simulated second between random clients -- costs
at most 1.5x the gossip-only run's wall time; both and the ratio are printed side by side.
``--incident`` adds the done-when run (100 nodes, 10% loss, 120 s, 500 MESSAGEs, 20 calls):
every MESSAGE delivered exactly once, every call established with media both ways.
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
from meshcomm.sim.traffic import TrafficKind, TrafficPlan, TrafficRate

COVERAGE_TARGET = 0.999
RATIO_TARGET = 0.6
SPEED_NODES, SPEED_SIM_S, SPEED_TARGET_WALL_S = 200, 600.0, 60.0
#: Whole nodes with 1 MESSAGE per simulated second cost at most this much more wall time.
WHOLE_RATIO_TARGET = 1.5
WHOLE_MESSAGES_PER_S = 1.0
#: Issue 9's done-when incident.
INCIDENT = {"nodes": 100, "loss": 0.1, "duration_s": 120.0, "messages": 500, "calls": 20}


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
                   and float(str(row["tx_ratio"])) <= RATIO_TARGET)
    return row


def speed(nodes: int, sim_s: float, seed: int, whole: bool = False) -> dict[str, object]:
    """The gossip-only run, or (``whole``) the same with whole nodes and 1 MESSAGE/s."""
    params = ScenarioParams(topology="random", nodes=nodes, loss=0.1, duration_s=sim_s,
                            seed=seed)
    config = sim_config(params)
    if whole:
        config.traffic = TrafficPlan(rates=(TrafficRate(TrafficKind.MESSAGE,
                                                        WHOLE_MESSAGES_PER_S),))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    res = Simulator(config).run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    row: dict[str, object] = {
        "nodes": nodes, "simulated_s": sim_s, "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2), "simulated_per_wall": round(sim_s / wall, 2),
        "coverage": res["coverage"], "digest": res["digest"],
        "pass": cpu <= SPEED_TARGET_WALL_S}
    if whole:
        row["messages"] = res["messages"]
        del row["pass"]
    return row


def incident(seed: int) -> dict[str, object]:
    """Issue 9's done-when: the whole incident, exactly-once and media both ways."""
    params = ScenarioParams(topology="random", nodes=int(INCIDENT["nodes"]),
                            loss=INCIDENT["loss"], duration_s=INCIDENT["duration_s"],
                            seed=seed, messages=int(INCIDENT["messages"]),
                            calls=int(INCIDENT["calls"]))
    wall0 = time.perf_counter()
    res = Simulator(sim_config(params)).run()
    m, c = res["messages"], res["calls"]
    assert isinstance(m, dict) and isinstance(c, dict)
    return {**INCIDENT, "seed": seed, "wall_s": round(time.perf_counter() - wall0, 2),
            "messages": m, "calls": c, "digest": res["digest"],
            "pass": (m["delivered"] == m["sent"] and m["duplicates"] == 0
                     and c["established"] == c["attempted"]
                     and c["media_both_ways"] == c["attempted"])}


def speed_pair(seed: int, quick: bool) -> dict[str, object]:
    sim_s = SPEED_SIM_S / (4 if quick else 1)
    gossip = speed(SPEED_NODES, sim_s, seed)
    print(f"\nspeed: {gossip['nodes']} nodes x {gossip['simulated_s']:.0f} simulated s in "
          f"{gossip['wall_s']} s wall ({gossip['cpu_s']} s CPU on one core): "
          f"{gossip['simulated_per_wall']}x real time; target <= {SPEED_TARGET_WALL_S:.0f} s: "
          f"{'yes' if gossip['pass'] else 'NO'}", flush=True)
    whole = speed(SPEED_NODES, sim_s, seed, whole=True)
    ratio = round(float(str(whole["wall_s"])) / max(1e-9, float(str(gossip["wall_s"]))), 3)
    cpu_ratio = round(float(str(whole["cpu_s"])) / max(1e-9, float(str(gossip["cpu_s"]))), 3)
    m = whole["messages"]
    assert isinstance(m, dict)
    print(f"{'':>6} {'gossip only':>12} {'whole nodes':>12} {'ratio':>6}\n"
          f"{'wall':>6} {gossip['wall_s']:>11}s {whole['wall_s']:>11}s {ratio:>6}\n"
          f"{'cpu':>6} {gossip['cpu_s']:>11}s {whole['cpu_s']:>11}s {cpu_ratio:>6}\n"
          f"whole nodes: gateways, store-and-forward, media relays, {SPEED_NODES} SIP clients, "
          f"{WHOLE_MESSAGES_PER_S:g} MESSAGE/s: {m['delivered']}/{m['sent']} delivered, "
          f"{m['duplicates']} duplicates, {m['held']} held, {m['pending_at_end']} pending "
          f"at the end; ratio target <= {WHOLE_RATIO_TARGET}: "
          f"{'yes' if ratio <= WHOLE_RATIO_TARGET else 'NO'}", flush=True)
    return {"gossip": gossip, "whole": whole, "wall_ratio": ratio, "cpu_ratio": cpu_ratio,
            "pass": ratio <= WHOLE_RATIO_TARGET}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--duration", type=float, default=60.0, help="simulated s per pair")
    ap.add_argument("--speed-only", action="store_true", help="skip the overlay/flood pairs")
    ap.add_argument("--incident", action="store_true", help="also run issue 9's incident")
    args = ap.parse_args()
    sizes: tuple[int, ...] = (50, 100) if args.quick else (50, 100, 200)
    losses = (0.0, 0.1) if args.quick else (0.0, 0.1, 0.2)
    if args.speed_only:
        sizes = ()
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
    pair = speed_pair(args.seed, args.quick)
    out: dict[str, object] = {"bench": "gossip", "seed": args.seed, "pairs": rows,
                              "speed": pair["gossip"], "whole_speed": pair}
    if args.incident:
        inc = incident(args.seed)
        m, c = inc["messages"], inc["calls"]
        assert isinstance(m, dict) and isinstance(c, dict)
        print(f"\nincident: {inc['nodes']} nodes, {inc['loss']:.0%} loss, "
              f"{inc['duration_s']:.0f} s, seed {args.seed}: messages {m['delivered']}/"
              f"{m['sent']} delivered, {m['duplicates']} duplicates, {m['held']} held; calls "
              f"{c['established']}/{c['attempted']} established, {c['media_both_ways']} with "
              f"media both ways, {c['media_frames_lost']} frames lost; "
              f"{'yes' if inc['pass'] else 'NO'} ({inc['wall_s']} s wall)", flush=True)
        out["incident"] = inc
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
