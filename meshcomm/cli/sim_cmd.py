"""``meshcomm sim``: run the deterministic simulator and print what it measured."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from meshcomm.errors import ConfigError
from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import TOPOLOGIES, ScenarioParams, load_scenario, sim_config

#: Progress lines start once a run has taken this long in wall time.
PROGRESS_AFTER_S = 2.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "sim", help="simulate an incident mesh in virtual time",
        description="Run the gossip overlay (or a naive-flooding baseline) on a simulated "
                    "radio in virtual time. Deterministic for a --seed.")
    p.add_argument("--topology", choices=TOPOLOGIES[:3], default="random")
    p.add_argument("--nodes", type=int, default=30)
    p.add_argument("--loss", type=float, default=0.0, help="per-link loss probability")
    p.add_argument("--delay-ms", type=float, default=2.0, help="per-link one-way delay")
    p.add_argument("--range", type=float, default=0.2, dest="radio_range",
                   help="radio range for --topology random (100 nodes per unit square)")
    p.add_argument("--duration", type=float, default=60.0, help="simulated seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scenario", type=Path, metavar="FILE",
                   help="a TOML scenario (overrides the topology options)")
    p.add_argument("--baseline", choices=["flood"], help="run naive flooding instead")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run_sim)


def _config(args: argparse.Namespace) -> Any:
    if args.scenario is not None:
        return load_scenario(args.scenario, args.baseline)
    if args.duration <= 0:
        raise ConfigError("--duration", "must be > 0")
    if not 0 <= args.loss <= 1:
        raise ConfigError("--loss", "must be in [0, 1]")
    params = ScenarioParams(topology=args.topology, nodes=args.nodes, loss=args.loss,
                            delay_ms=args.delay_ms, radio_range=args.radio_range,
                            duration_s=args.duration, seed=args.seed)
    return sim_config(params, baseline=args.baseline)


def run_sim(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"meshcomm sim: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()

    def progress(now: float, end: float) -> None:
        if time.monotonic() - started >= PROGRESS_AFTER_S:
            print(f"  sim {now:7.1f}/{end:.0f} s  ({time.monotonic() - started:5.1f} s wall)",
                  file=sys.stderr, flush=True)

    topo = config.topology
    result = Simulator(config, progress=progress).run()
    wall = time.monotonic() - started
    result["wall_s"] = round(wall, 3)
    result["simulated_per_wall"] = round(config.duration_s / wall, 2) if wall > 0 else None
    result["diameter_hops"] = topo.diameter()
    result["mean_degree"] = round(topo.mean_degree(), 2)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_result(result))
    return 0


def format_result(r: dict[str, Any]) -> str:
    conv = r["convergence_s"]
    rejected = ", ".join(f"{k}={v}" for k, v in r["rejected"].items()) or "none"
    lines = [
        f"{r['baseline']}: {r['nodes']} nodes, diameter {r['diameter_hops']} hops, "
        f"mean degree {r['mean_degree']}, {r['duration_s']:.0f} s simulated "
        f"in {r['wall_s']:.1f} s",
        f"  coverage            {r['coverage']:.4f} of (node, binding) pairs "
        f"({r['bindings']} live bindings)",
        f"  convergence         p50 {conv['p50']:.3f} s   p99 {conv['p99']:.3f} s   "
        f"max {conv['max']:.3f} s   ({conv['converged']}/{r['announcements']} announcements)",
        f"  cost                {r['transmissions_per_binding']:.1f} binding frames per "
        f"announcement, {r['frames_total']} frames, {r['bytes_on_air']} bytes on air",
        f"  duplicates received {r['duplicates_received']}",
        f"  rejected            {rejected}",
        f"  trace digest        {r['digest']}",
    ]
    return "\n".join(lines)
