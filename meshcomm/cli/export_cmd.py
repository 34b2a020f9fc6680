"""``meshcomm export PATH... --out DIR``: node journals merged into one verified timeline.

Each PATH is a node's data directory (``journal.sqlite`` and, when there, ``identity.key``,
whose public key checks the journal's signed checkpoints) or a journal file copied off a
device. Every journal is verified first; a device whose journal has problems (edited,
removed, reordered, truncated entries, a bad checkpoint, or copies that fork) is named with
the entry and left out of the timeline, unless ``--allow-unverified`` (then its events are
marked ``verified: false``). Clocks are corrected from the SIP messages the devices both
journaled (offsets against ``--reference``, default the first device by id).

Writes ``timeline.jsonl`` and ``timeline.csv`` into ``--out`` (schema: docs/export.md).
``--json`` prints the summary (``devices``, ``events``, ``verified``, ``problems``: a list
of ``{device, entry, kind}``). Progress goes to stderr.

Exit status: 0 every journal verified, 1 a problem found (the rest is still exported),
2 usage error or a path without a journal, 3 the output could not be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Final

from meshcomm.export.pipeline import ExportSummary, export
from meshcomm.export.reader import ExportInputError

EXIT_OK: Final = 0
EXIT_PROBLEMS: Final = 1
EXIT_USAGE: Final = 2
EXIT_OUTPUT: Final = 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export", help="merge node journals into one verified timeline",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", metavar="PATH", nargs="+", type=Path,
                        help="a node's data directory or a journal file")
    parser.add_argument("--out", metavar="DIR", type=Path, required=True,
                        help="directory for timeline.jsonl and timeline.csv")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="merge journals that fail verification, marked so")
    parser.add_argument("--reference", metavar="HEX",
                        help="the device whose clock the timeline uses (node id prefix)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    def progress(text: str) -> None:
        print(f"export: {text}", file=sys.stderr)

    try:
        summary = export(args.paths, args.out, allow_unverified=args.allow_unverified,
                         reference=args.reference, progress=progress)
    except ExportInputError as exc:
        print(f"meshcomm export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"meshcomm export: cannot write {args.out}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_OUTPUT
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    else:
        _print_text(summary, args.out)
    return EXIT_OK if summary.verified else EXIT_PROBLEMS


def _print_text(summary: ExportSummary, out: Path) -> None:
    for device in summary.devices:
        offset = device["offset_s"]
        clock = ("clock offset unknown" if offset is None else
                 f"clock {offset:+.3f} s (+/- {device['offset_uncertainty_s']:.3f})")
        verdict = "verified" if device["verified"] else "NOT VERIFIED"
        merged = "" if device["merged"] else ", left out"
        print(f"{str(device['device'])[:16]}  {verdict}{merged}  {device['entries']} "
              f"entries  {clock}")
    for p in summary.problems:
        print(f"  problem: {p.device[:16]} entry {p.entry}: {p.kind} {p.detail}")
    print(f"{summary.events} events from {len(summary.devices)} device(s) written to {out} "
          f"({summary.exchanges} send/receive pairs for the clocks"
          f"{'' if summary.clocks_consistent else '; their bounds contradict'})")
