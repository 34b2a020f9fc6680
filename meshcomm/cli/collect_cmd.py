"""``meshcomm ctl collect --out DIR``: the running node (a command post) pulls the journal
of every device it reaches, and its own, into ``DIR/<node id hex>/`` (docs/collect.md).

The node does the work; this command starts it over the control socket, prints progress on
stderr while it runs and a summary at the end (``--json``: one object, a row per device).
Exit status 0 when every device was collected completely, 4 when some device could not be
(each named on stderr with its error), 1 when the node is not running. Ctrl-C cancels the
collection (what was stored stays; the next run resumes from it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Final

from meshcomm.cli.handset_cmd import resolve_data_dir
from meshcomm.config import NodeConfig
from meshcomm.runtime.control import (
    CONTROL_SOCKET_FILE,
    ControlCommand,
    ControlError,
    control_request,
)

EXIT_NOT_RUNNING: Final = 1
#: Some device could not be collected (or the collection was still running at --wait-s).
EXIT_INCOMPLETE: Final = 4
EXIT_INTERRUPTED: Final = 130
DEFAULT_WAIT_S: Final = 3600.0
POLL_S: Final = 0.5
#: Progress is printed when it changes, else at least this often.
QUIET_PROGRESS_S: Final = 10.0
NODE_CHARS: Final = 16


def register_collect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    collect = sub.add_parser(
        "collect", help="pull every reachable device's journal into a directory",
        description="Collect the journals of every device this node reaches (and its own) "
                    "into DIR/<node id hex>/journal.sqlite and public.key, incrementally: "
                    "a second run fetches only newer entries. Devices answer only "
                    "collectors their profile authorises ([export]).")
    collect.add_argument("--out", metavar="DIR", type=Path,
                         help="where the copies go (created; required to start)")
    collect.add_argument("--json", action="store_true", help="print a JSON summary")
    collect.add_argument("--wait-s", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                         help="stop waiting after this long (the node carries on; default "
                              "%(default)s)")
    collect.add_argument("--status", action="store_true",
                         help="show the current or last collection and exit")
    collect.add_argument("--cancel", action="store_true", help="cancel a running collection")
    collect.set_defaults(handler=run_collect)


def _ask(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    path = resolve_data_dir(args, NodeConfig()) / CONTROL_SOCKET_FILE
    result = control_request(path, ControlCommand.COLLECT, timeout_s=args.timeout_s, **extra)
    if not isinstance(result, dict):
        raise ControlError("malformed reply from the node")
    return result


def run_collect(args: argparse.Namespace) -> int:
    try:
        if args.status or args.cancel:
            result = _ask(args, action="cancel" if args.cancel else "status")
            return _finish(args, result)
        if args.out is None:
            print("meshcomm ctl collect: --out DIR is required", file=sys.stderr)
            return 2
        result = _ask(args, action="start", out=str(args.out.expanduser().resolve()))
        try:
            result = _wait(args, result)
        except KeyboardInterrupt:
            result = _ask(args, action="cancel")
            _finish(args, result)
            return EXIT_INTERRUPTED
    except ControlError as exc:
        print(f"meshcomm ctl collect: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    return _finish(args, result)


def _wait(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + args.wait_s
    last, printed_at = "", 0.0
    while result.get("running") and time.monotonic() < deadline:
        line = progress_line(result)
        counts = line.rsplit(",", 1)[0]
        if counts != last or time.monotonic() - printed_at >= QUIET_PROGRESS_S:
            print(line, file=sys.stderr, flush=True)
            last, printed_at = counts, time.monotonic()
        time.sleep(POLL_S)
        result = _ask(args, action="status")
    print(progress_line(result), file=sys.stderr, flush=True)
    return result


def progress_line(status: dict[str, Any]) -> str:
    devices = status.get("devices", [])
    done = sum(1 for d in devices if d.get("done"))
    rows = sum(int(d.get("rows", 0)) for d in devices)
    wire = sum(int(d.get("wire_bytes", 0)) for d in devices)
    return (f"collect: {done}/{len(devices)} device(s) done, {rows} entries, "
            f"{wire / 1000:.1f} kB on the wire, {status.get('elapsed_s', 0):.1f} s")


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` summary: per device ``node``, ``state``, ``complete``, ``rows``
    (collected in this run), ``wire_bytes``, ``held_seq`` (the newest entry DIR holds),
    ``head_seq`` (the device's, as it last said), ``error``, ``local`` (this node)."""
    keys = ("node", "state", "complete", "rows", "wire_bytes", "held_seq", "head_seq",
            "error", "local")
    devices = [{k: d.get(k) for k in keys} for d in status.get("devices", [])]
    return {"out": status.get("out"), "running": status.get("running"),
            "elapsed_s": status.get("elapsed_s"), "left_out": status.get("left_out", 0),
            "complete": bool(devices) and all(d["complete"] for d in devices),
            "devices": devices}


def _finish(args: argparse.Namespace, status: dict[str, Any]) -> int:
    result = summary(status)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_summary(result))
    failed = [d for d in result["devices"] if not d["complete"]]
    for device in failed:
        print(f"meshcomm ctl collect: device {device['node']} not collected completely: "
              f"{device['error'] or device['state']}", file=sys.stderr)
    if result["running"]:
        print("meshcomm ctl collect: still running (ctl collect --status)", file=sys.stderr)
    return EXIT_INCOMPLETE if failed or result["running"] or result["left_out"] else 0


def format_summary(result: dict[str, Any]) -> str:
    lines = [f"{'NODE':<{NODE_CHARS}}  {'STATE':<9} {'ENTRIES':>8} {'HELD SEQ':>9} "
             f"{'WIRE kB':>8}  ERROR"]
    for d in result["devices"]:
        node = str(d["node"])[:NODE_CHARS] + ("*" if d.get("local") else "")
        lines.append(f"{node:<{NODE_CHARS}}  {d['state']:<9} {d['rows']:>8} "
                     f"{d['held_seq']:>9} {d['wire_bytes'] / 1000:>8.1f}  {d['error']}"
                     .rstrip())
    lines.append(f"{len(result['devices'])} device(s) in {result['out']} "
                 "(* this node, copied locally)")
    return "\n".join(lines)
