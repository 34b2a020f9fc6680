#!/usr/bin/env python3
"""python -m tools.testbed: build a namespace topology by hand, list or clean up leftovers.

  python -m tools.testbed chain 5 [--loss 10]   build, print namespaces, hold until Ctrl-C
  python -m tools.testbed chain 5 --nodes [--impair delay=15ms] [--relay 2] [--baresip]
                                                also run a meshcomm node in every namespace
                                                (and a baresip "userN" beside each)
  python -m tools.testbed chain 5 --nodes --attach 2
                                                also a namespace beside node 2 for the
                                                hostile-node injector (tools.testbed.inject)
  python -m tools.testbed star 4 | grid 3 3 | shared 4
  python -m tools.testbed list                  namespaces made by test beds
  python -m tools.testbed cleanup [--prefix P]  remove leftovers (default: of dead runs)
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Sequence

from tools.testbed import netns


def _build(args: argparse.Namespace) -> netns.Testbed:
    if args.verb == "chain":
        return netns.chain(args.n)
    if args.verb == "star":
        return netns.star(args.n)
    if args.verb == "shared":
        return netns.shared(args.n)
    return netns.grid(args.width, args.height)


def _start_nodes(bed: netns.Testbed, args: argparse.Namespace) -> None:
    relays = {int(i) for i in args.relay.split(",") if i} if args.relay else set()
    for i in range(bed.n_nodes):
        node = bed.start_node(i, role="relay" if i in relays else "handset", name=f"n{i}",
                              impair=args.impair)
        print(f"node {i}: meshcomm {node.role} sip:n{i}@incident.local, "
              f"ctl: meshcomm ctl --data-dir {node.data_dir} status")
        if args.baresip:
            client = bed.start_baresip(i, f"user{i}")
            print(f"node {i}: baresip {client.aor}, config {client.conf_dir}, "
                  f"log {client.log_path}")


def _hold(args: argparse.Namespace) -> int:
    with _build(args) as bed:
        if args.loss:
            bed.set_loss_everywhere(args.loss)
        if args.attach is not None:
            hostile = bed.attach(args.attach)
            print(f"beside node {args.attach}: {hostile}  interface: to{args.attach}  try: "
                  f"ip netns exec {hostile} {sys.executable} -m tools.testbed.inject sybil "
                  f"--iface to{args.attach} --rate 1000 --duration 60")
        for i in range(bed.n_nodes):
            print(f"node {i}: {bed.ns(i)}  interfaces: {' '.join(bed.interfaces(i))}")
        if args.nodes:
            _start_nodes(bed, args)
        print("try: ip netns exec NAME bash   (Ctrl-C tears everything down)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


def _node_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--nodes", action="store_true", help="start a meshcomm node in each")
    sub.add_argument("--impair", help="radio impairment of every node, e.g. delay=15ms")
    sub.add_argument("--relay", default="", help="comma-separated nodes that run as relay")
    sub.add_argument("--baresip", action="store_true",
                     help="with --nodes: a baresip userN beside every node")
    sub.add_argument("--attach", type=int, metavar="NODE",
                     help="add a namespace linked to NODE only, for tools.testbed.inject")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.testbed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb in ("chain", "star", "shared"):
        sub = verbs.add_parser(verb, help=f"build a {verb} topology and hold it")
        sub.add_argument("n", type=int)
        sub.add_argument("--loss", type=int, default=0, help="loss percent per interface")
        _node_options(sub)
    sub = verbs.add_parser("grid", help="build a grid topology and hold it")
    sub.add_argument("width", type=int)
    sub.add_argument("height", type=int)
    sub.add_argument("--loss", type=int, default=0, help="loss percent per interface")
    _node_options(sub)
    verbs.add_parser("list", help="list test-bed namespaces")
    sub = verbs.add_parser("cleanup", help="remove leftover namespaces")
    sub.add_argument("--prefix", help="remove every namespace starting with this")
    args = parser.parse_args(argv)
    if args.verb == "list":
        for name in netns.list_namespaces():
            if name.startswith(netns.NAME_ROOT):
                print(name)
        return 0
    if args.verb == "cleanup":
        for name in netns.cleanup(args.prefix):
            print(f"removed {name}")
        return 0
    return _hold(args)


if __name__ == "__main__":
    sys.exit(main())
