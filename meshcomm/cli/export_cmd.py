"""``meshcomm export PATH... --out DIR``: node journals merged into one verified timeline.

Each PATH is a node's data directory (``journal.sqlite`` and, when there, ``identity.key``,
whose public key checks the journal's signed checkpoints), a device directory of a
``ctl collect`` output (``journal.sqlite`` and ``public.key``), a whole collection
directory (every device directory in it), or a journal file copied off a device. Every
journal is verified first; a device whose journal has problems (edited, removed,
reordered, truncated entries, a bad checkpoint, or copies that fork) is named with the
entry and left out of the timeline, unless ``--allow-unverified`` (then its events are
marked ``verified: false``). Clocks are corrected from the SIP messages the devices both
journaled (offsets against ``--reference``, default the first device by id).

Writes ``timeline.jsonl`` and ``timeline.csv`` into ``--out`` (schema: docs/export.md).
``--from``/``--to`` (ISO 8601 or Unix seconds, on the corrected clock), ``--aor``,
``--call-id`` and ``--type`` choose the events written (verification and the clocks
always use everything). Message bodies a journal kept are written only with
``--include-bodies``. ``--json`` prints the summary (``devices``, ``events``, ``verified``,
``problems``: a list of ``{device, entry, kind}``) and nothing else on stdout. Progress
goes to stderr (``--quiet``: none).

Exit status: 0 every journal verified, 1 a problem found (the rest is still exported),
2 usage error or a path without a journal, 3 the output could not be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Final

from meshcomm.export.filters import EventFilter, FilterError, parse_time
from meshcomm.export.pipeline import PCAP_FILE, ExportSummary, export
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
                        help="a data directory, a collection directory or a journal file")
    parser.add_argument("--out", metavar="DIR", type=Path, required=True,
                        help="directory for timeline.jsonl and timeline.csv")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="merge journals that fail verification, marked so")
    parser.add_argument("--reference", metavar="HEX",
                        help="the device whose clock the timeline uses (node id prefix)")
    parser.add_argument("--from", dest="from_time", metavar="TIME",
                        help="only events at or after TIME (ISO 8601 or Unix seconds, "
                             "corrected clock)")
    parser.add_argument("--to", dest="to_time", metavar="TIME",
                        help="only events at or before TIME")
    parser.add_argument("--aor", action="append", default=[], metavar="AOR",
                        help="only events naming this AoR in from/to/aor (repeatable)")
    parser.add_argument("--call-id", action="append", default=[], metavar="ID",
                        help="only events of this Call-ID (repeatable)")
    parser.add_argument("--type", dest="types", action="append", default=[], metavar="TYPE",
                        help="only events of this type, e.g. sip.message (repeatable)")
    parser.add_argument("--include-bodies", action="store_true",
                        help="write the message bodies the journals kept")
    parser.add_argument("--no-capture", action="store_true",
                        help="do not write sip.pcapng")
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(handler=run_export)


def _filter(args: argparse.Namespace) -> EventFilter:
    return EventFilter.of(
        from_s=None if args.from_time is None else parse_time(args.from_time),
        to_s=None if args.to_time is None else parse_time(args.to_time),
        aors=args.aor, call_ids=args.call_id, types=args.types)


def run_export(args: argparse.Namespace) -> int:
    def progress(text: str) -> None:
        print(f"export: {text}", file=sys.stderr, flush=True)

    try:
        keep = _filter(args)
        summary = export(args.paths, args.out, allow_unverified=args.allow_unverified,
                         reference=args.reference,
                         progress=None if args.quiet else progress, keep=keep,
                         include_bodies=args.include_bodies,
                         capture=not args.no_capture, report=not args.no_report)
    except (ExportInputError, FilterError) as exc:
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
    shown = (f"{summary.events} events" if summary.events == summary.events_merged else
             f"{summary.events} of {summary.events_merged} events (filtered)")
    print(f"{shown} from {len(summary.devices)} device(s) written to {out} "
          f"({summary.exchanges} send/receive pairs for the clocks"
          f"{'' if summary.clocks_consistent else '; their bounds contradict'})")
    if summary.sip_packets is not None:
        print(f"{summary.sip_packets} SIP packets in {out / PCAP_FILE}")
