"""``meshcomm sim``: run the deterministic simulator and print what it measured."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from meshcomm.errors import ConfigError
from meshcomm.sim.edge import SimStalled
from meshcomm.sim.engine import Simulator
from meshcomm.sim.scenario import (
    MAX_CALL_S,
    MAX_UPLINK_DELAY_MS,
    TOPOLOGIES,
    ScenarioParams,
    build_topology,
    default_uplink_nodes,
    load_scenario,
    sim_config,
)
from meshcomm.sim.topology import Topology
from meshcomm.sim.traffic import DEFAULT_CALL_S, MAX_TRAFFIC_EVENTS
from meshcomm.sim.uplinks import UplinkSpec

#: Progress lines start once a run has taken this long in wall time.
PROGRESS_AFTER_S = 2.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "sim", help="simulate an incident mesh in virtual time",
        description="Run the gossip overlay (or a naive-flooding baseline) on a simulated "
                    "radio in virtual time. With --messages/--calls (or traffic in the "
                    "scenario) every node is whole -- SIP gateway, store-and-forward, media "
                    "relay -- with one simulated SIP client. Deterministic for a --seed.")
    p.add_argument("--topology", choices=TOPOLOGIES[:4], default="random",
                   help="islands: --islands separate radio islands of --nodes nodes each, "
                        "their hubs uplinked on one WAN")
    p.add_argument("--nodes", type=int, default=30, help="nodes (per island for islands)")
    p.add_argument("--islands", type=int, default=3, metavar="N",
                   help="islands of --topology islands (default %(default)s)")
    p.add_argument("--uplink-delay-ms", type=float, default=50.0, metavar="MS",
                   help="one-way WAN delay between uplinked relays (default %(default)s)")
    p.add_argument("--uplink-loss", type=float, default=0.0, metavar="P",
                   help="WAN datagram loss probability")
    p.add_argument("--uplink-flap", type=float, default=0.0, metavar="S",
                   help="each uplink is up for S seconds, then down for S, and so on "
                        "(staggered by S/3 per island); 0: always up")
    p.add_argument("--cross-site", type=float, default=None, metavar="F",
                   help="fraction of the random traffic pairs taken across islands")
    p.add_argument("--loss", type=float, default=0.0, help="per-link loss probability")
    p.add_argument("--delay-ms", type=float, default=2.0, help="per-link one-way delay")
    p.add_argument("--range", type=float, default=0.2, dest="radio_range",
                   help="radio range for --topology random (100 nodes per unit square)")
    p.add_argument("--duration", type=float, default=60.0, help="simulated seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--scenario", type=Path, metavar="FILE",
                   help="a TOML scenario (overrides the topology options; --messages, "
                        "--calls and --gateways add to it)")
    p.add_argument("--baseline", choices=["flood"], help="run naive flooding instead")
    p.add_argument("--messages", type=int, default=0, metavar="N",
                   help="N MESSAGEs between random pairs of registered clients, spread "
                        "uniformly over the run after registration")
    p.add_argument("--calls", type=int, default=0, metavar="N",
                   help="N calls (SDP offer/answer, 20 ms media frames both ways) between "
                        "random pairs of clients")
    p.add_argument("--call-duration", type=float, default=DEFAULT_CALL_S, metavar="S",
                   help="seconds before the caller hangs up (default %(default)s)")
    p.add_argument("--gateways", action="store_true",
                   help="run whole nodes (gateway, store-and-forward, media relay, a SIP "
                        "client each) even without traffic")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run_sim)


def _config(args: argparse.Namespace) -> Any:
    for flag, value in (("--messages", args.messages), ("--calls", args.calls)):
        if not 0 <= value <= MAX_TRAFFIC_EVENTS:
            raise ConfigError(flag, f"must be in 0..{MAX_TRAFFIC_EVENTS}")
    if not 0 < args.call_duration <= MAX_CALL_S:
        raise ConfigError("--call-duration", f"must be in (0, {MAX_CALL_S:.0f}]")
    if args.scenario is not None:
        config = load_scenario(args.scenario, args.baseline)
        traffic = config.traffic
        if args.messages:
            traffic = dataclasses.replace(traffic, random_messages=args.messages)
        if args.calls:
            traffic = dataclasses.replace(traffic, random_calls=args.calls)
        if args.cross_site is not None:
            traffic = dataclasses.replace(traffic, cross_site=_fraction("--cross-site",
                                                                        args.cross_site))
        config.traffic = traffic
        config.gateways = config.gateways or args.gateways
        return config
    if args.duration <= 0:
        raise ConfigError("--duration", "must be > 0")
    if not 0 <= args.loss <= 1:
        raise ConfigError("--loss", "must be in [0, 1]")
    params = ScenarioParams(topology=args.topology, nodes=args.nodes, loss=args.loss,
                            delay_ms=args.delay_ms, radio_range=args.radio_range,
                            duration_s=args.duration, seed=args.seed, messages=args.messages,
                            calls=args.calls, call_duration_s=args.call_duration,
                            gateways=args.gateways, islands=args.islands,
                            cross_site=_fraction("--cross-site", args.cross_site or 0.0))
    if args.topology != "islands":
        return sim_config(params, baseline=args.baseline)
    topo = build_topology(params)
    return sim_config(params, topo, baseline=args.baseline, uplinks=(_uplink(args, topo),))


def _fraction(flag: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(flag, "must be in [0, 1]")
    return value


def _uplink(args: argparse.Namespace, topo: Topology) -> UplinkSpec:
    """One WAN between the hubs of the islands, as the --uplink-* options say."""
    if not 0.0 <= args.uplink_delay_ms <= MAX_UPLINK_DELAY_MS:
        raise ConfigError("--uplink-delay-ms", f"must be in [0, {MAX_UPLINK_DELAY_MS:.0f}]")
    if not 0.0 <= args.uplink_loss < 1.0:
        raise ConfigError("--uplink-loss", "must be in [0, 1)")
    if not 0.0 <= args.uplink_flap <= 1e7:
        raise ConfigError("--uplink-flap", "must be >= 0")
    nodes = default_uplink_nodes(topo)
    if len(nodes) < 2:
        raise ConfigError("--islands", "uplinks need at least two islands")
    flap = args.uplink_flap
    return UplinkSpec(nodes, delay_s=args.uplink_delay_ms / 1000.0, loss=args.uplink_loss,
                      flap_period_s=2 * flap, flap_down_s=flap, flap_stagger_s=flap / 3)


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
    try:
        result = Simulator(config, progress=progress).run()
    except ConfigError as exc:         # e.g. a run too short for its traffic
        print(f"meshcomm sim: {exc}", file=sys.stderr)
        return 2
    except SimStalled as exc:          # a node's timer spun at one virtual instant
        print(f"meshcomm sim: stalled: {exc}", file=sys.stderr)
        return 1
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
    ]
    if "messages" in r:
        lines += _traffic_lines(r["messages"], r["calls"])
    if "uplinks" in r:
        lines += _uplink_lines(r["uplinks"])
    lines.append(f"  trace digest        {r['digest']}")
    return "\n".join(lines)


def _traffic_lines(m: dict[str, Any], c: dict[str, Any]) -> list[str]:
    lat, setup = m["latency_s"], c["setup_s"]
    return [
        f"  messages            {m['delivered']}/{m['sent']} delivered, {m['duplicates']} "
        f"duplicates, {m['held']} held for store-and-forward, {m['failed']} failed; "
        f"latency p50 {lat['p50']:.3f} s p95 {lat['p95']:.3f} s max {lat['max']:.3f} s",
        f"  calls               {c['established']}/{c['attempted']} established "
        f"(setup p50 {setup['p50']:.3f} s p95 {setup['p95']:.3f} s), "
        f"{c['media_both_ways']} with media both ways; media frames "
        f"{c['media_frames_received']}/{c['media_frames_sent']} received, "
        f"{c['media_frames_lost']} lost",
    ]


def _uplink_lines(u: dict[str, Any]) -> list[str]:
    m, res = u["cross_site_messages"], u["resolution"]
    lat, rlat = m["latency_s"], res["latency_s"]
    answered = ", ".join(f"{k} {v}" for k, v in res["answered"].items()) or "none"
    moves = ", ".join(f"{k} {v}" for k, v in u["transitions"].items()) or "none"
    return [
        f"  cross-site          {m['delivered_once']}/{m['sent']} delivered exactly once "
        f"({m['delivered_once_fraction']:.4f}), {m['duplicates']} duplicates, {m['held']} "
        f"held, {m['failed']} failed, {m['pending_at_end']} pending; latency p50 "
        f"{lat['p50']:.3f} s p95 {lat['p95']:.3f} s max {lat['max']:.3f} s",
        f"  resolution          {answered}; found in p50 {rlat['p50']:.3f} s "
        f"p95 {rlat['p95']:.3f} s",
        f"  uplink transitions  {moves} (uplinked: {', '.join(u['uplinked'])})",
    ]
