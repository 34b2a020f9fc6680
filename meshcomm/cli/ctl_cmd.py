"""``meshcomm ctl``: talk to a running node over the unix socket in its data dir.

``ctl who [--json]`` lists the bindings the node knows, ``ctl status [--json]`` shows the
node, its neighbours, routes, counters, journal and SIP gateway, ``ctl send AOR TEXT``
sends a MESSAGE from the node's AoR and prints its outcome (delivered, held or failed),
``ctl inbox`` lists MESSAGEs to the node's AoR, ``ctl outbox`` where held MESSAGEs are
(queued, held by a relay, delivered; a held ``ctl send`` names its outbox id, and the
outbox names the send id), ``ctl collect --out DIR`` pulls the journals of every device
the node reaches into DIR (docs/collect.md), ``ctl user add|remove|list|hash`` manages the
SIP users its gateway authenticates (docs/sip-auth.md), ``ctl stop`` asks it to
de-register and exit.
A node that is not running gives one line and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshcomm.cli.collect_cmd import register_collect
from meshcomm.cli.handover_cmd import register_handover
from meshcomm.cli.handset_cmd import resolve_data_dir
from meshcomm.cli.user_cmd import register_user
from meshcomm.config import NodeConfig
from meshcomm.runtime.app import data_dir_locked
from meshcomm.runtime.control import (
    CONTROL_SOCKET_FILE,
    DEFAULT_CLIENT_TIMEOUT_S,
    ControlCommand,
    ControlError,
    control_request,
)

EXIT_NOT_RUNNING = 1
#: ``ctl stop --wait`` polls for the socket file to disappear this often.
STOP_POLL_S = 0.05
SHORT_ID_CHARS = 8
#: Hex digits of a store-and-forward message id shown by ``ctl send`` and ``ctl outbox``.
OUTBOX_ID_CHARS = 16


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ctl`` with its actions ``who``, ``status`` and ``stop``."""
    ctl = subparsers.add_parser("ctl", help="query or stop a running node",
                                description="Talk to a running node through the control "
                                            "socket in its data dir.")
    ctl.add_argument("--data-dir", metavar="DIR", type=Path,
                     help="the node's data dir (default $XDG_DATA_HOME/meshcomm or "
                          "~/.local/share/meshcomm)")
    ctl.add_argument("--timeout", metavar="SECONDS", type=float,
                     default=DEFAULT_CLIENT_TIMEOUT_S, dest="timeout_s",
                     help="how long to wait for the reply (default %(default)s)")
    sub = ctl.add_subparsers(dest="ctl_command", metavar="ACTION", required=True)
    who = sub.add_parser("who", help="list the bindings the node knows")
    who.add_argument("--json", action="store_true", help="print a JSON list")
    who.set_defaults(handler=run_who)
    status = sub.add_parser("status", help="node, neighbours, routes, counters, journal")
    status.add_argument("--json", action="store_true", help="print a JSON object")
    status.set_defaults(handler=run_status)
    send = sub.add_parser("send", help="send a text MESSAGE from the node's own AoR")
    send.add_argument("to", metavar="AOR", help="destination, e.g. sip:medic-7@incident.local")
    send.add_argument("text", metavar="TEXT", help="the message text")
    send.add_argument("--json", action="store_true", help="print a JSON object")
    send.set_defaults(handler=run_send)
    inbox = sub.add_parser("inbox", help="MESSAGEs delivered to the node's own AoR")
    inbox.add_argument("--json", action="store_true", help="print a JSON list")
    inbox.set_defaults(handler=run_inbox)
    outbox = sub.add_parser("outbox", help="held MESSAGEs: queued, held by a relay, delivered")
    outbox.add_argument("--json", action="store_true", help="print a JSON list")
    outbox.add_argument("--all", action="store_true",
                        help="also list the messages this relay holds for other nodes")
    outbox.set_defaults(handler=run_outbox)
    register_collect(sub)
    register_user(sub)
    register_handover(sub)
    stop = sub.add_parser("stop", help="de-register and stop the node")
    stop.add_argument("--wait", action="store_true",
                      help="return only after the node has exited (up to --timeout)")
    stop.set_defaults(handler=run_stop)


def socket_path(args: argparse.Namespace) -> Path:
    """--data-dir, else the default data dir (as ``meshcomm handset`` resolves it)."""
    return resolve_data_dir(args, NodeConfig()) / CONTROL_SOCKET_FILE


def _request(args: argparse.Namespace, command: ControlCommand,
             **extra: Any) -> tuple[bool, Any]:
    try:
        return True, control_request(socket_path(args), command, timeout_s=args.timeout_s,
                                     **extra)
    except ControlError as exc:
        print(f"meshcomm ctl {command.value}: {exc}", file=sys.stderr)
        return False, None


def _short(node_id: object) -> str:
    return str(node_id)[:SHORT_ID_CHARS] if node_id else "-"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [list(header), *rows]]
    return "\n".join(lines)


def format_who(entries: Sequence[dict[str, Any]]) -> str:
    rows = [[str(e.get("aor")), _short(e.get("node_id")),
             "-" if e.get("hops") is None else str(e.get("hops")),
             _short(e.get("next_hop")), _who_state(e), f"{e.get('expires', 0):.0f} s"]
            for e in entries]
    table = format_table(["AOR", "NODE", "HOPS", "NEXT HOP", "STATE", "EXPIRES"], rows)
    return f"{table}\n{len(entries)} binding(s)"


def _who_state(entry: dict[str, Any]) -> str:
    """The state, and for a role address held by hand-over, since when (issue 12.3)."""
    since = entry.get("handover_from")
    if not isinstance(since, int):
        return str(entry.get("state"))
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(since))
    return f"{entry.get('state')} (handed over {stamp})"


def run_who(args: argparse.Namespace) -> int:
    ok, result = _request(args, ControlCommand.WHO)
    if not ok:
        return EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_who(result))
    return 0


def _nonzero(counters: dict[str, Any]) -> str:
    """``key=value`` of the counters that are not zero."""
    return ", ".join(f"{k}={v}" for k, v in counters.items() if v)


def format_journal(journal: dict[str, Any]) -> str:
    """The ``journal`` line of ``ctl status``; says loudly when the disk refuses writes."""
    line = f"journal  {journal.get('path')} durable seq {journal.get('durable_seq')}"
    if journal.get("writable", True):
        dropped = journal.get("dropped") or 0
        return line + (f" ({dropped} event(s) dropped earlier)" if dropped else "")
    return (line + f"; NOT WRITABLE: {journal.get('last_error')}; "
            f"{journal.get('pending')}/{journal.get('max_pending')} entries waiting, "
            f"{journal.get('dropped')} dropped")


def format_status(st: dict[str, Any]) -> str:
    journal = st.get("journal", {})
    lines = [
        f"node     {st.get('node_id')}",
        f"aor      {st.get('aor')}  (contact {st.get('contact')})",
        f"role     {st.get('role')}, incident {st.get('incident')!r}, "
        f"up {st.get('uptime_s', 0):.1f} s, boot epoch {st.get('boot_epoch')}",
        f"radios   {', '.join(st.get('radios', {})) or '-'}",
        format_journal(journal),
        f"bindings {st.get('bindings')}",
        "",
    ]
    nbs = [[_short(n["node_id"]), str(n["addr"]), str(n["role"]), f"{n['quality']:.2f}",
            f"{n['reverse_quality']:.2f}", str(n["cost"])] for n in st.get("neighbours", [])]
    lines.append(format_table(["NEIGHBOUR", "ADDRESS", "ROLE", "Q", "Q REV", "COST"], nbs))
    lines.append("")
    routes = [[_short(r["dst"]), _short(r["next_hop"]), str(r["hops"]), str(r["metric"])]
              for r in st.get("routes", [])]
    lines.append(format_table(["ROUTE TO", "NEXT HOP", "HOPS", "METRIC"], routes))
    lines.append("")
    lines.append("counters " + _nonzero(st.get("counters", {})))
    sip = st.get("sip")
    if sip:
        listen = sip.get("listen", {})
        lines.append(f"sip      {listen.get('host')} udp/{listen.get('udp_port')} "
                     f"tcp/{listen.get('tcp_port')}, pending {sip.get('pending_transactions')}"
                     f", inbox {sip.get('inbox')}, outbox pending {sip.get('outbox_pending')}, "
                     f"clients {', '.join(sip.get('local_registrations', [])) or '-'}")
        lines.append("sip counters " + _nonzero(sip.get("counters", {})))
        auth = sip.get("auth")
        lines.append("sip auth " + ("off (loopback listener)" if not auth else
                                    f"required, realm {auth.get('realm')}, "
                                    f"{auth.get('users')} user(s)"))
    sf = st.get("store_forward")
    if sf:
        own = sf.get("own", {})
        lines.append(f"store    own: {', '.join(f'{k} {v}' for k, v in own.items())}; "
                     f"held for others {sf.get('held_for_others')} "
                     f"(max {sf.get('max_held_messages')})")
        lines.append("store counters " + _nonzero(sf.get("counters", {})))
    collect = st.get("collect")
    if collect:
        lines.append(f"collect  serving {collect.get('serving')}; "
                     + (_nonzero(collect.get("counters", {})) or "nothing yet"))
    trust = st.get("trust")
    if trust and trust.get("records"):
        lines.append(f"trust    {trust['records']} record(s): revoked "
                     f"{trust.get('revoked_devices')} device(s), "
                     f"{trust.get('revoked_credentials')} credential(s), "
                     f"{trust.get('revoked_agencies')} agency key(s); "
                     f"{len(trust.get('trusted_agencies', []))} trusted agency key(s)")
        for rec in trust.get("latest", []):
            lines.append(f"  {rec.get('kind')} {str(rec.get('subject'))[:16]} by "
                         f"{rec.get('signer')} at {rec.get('issued_at')} {rec.get('note')!r}")
        if trust.get("this_node_revoked"):
            lines.append(f"trust    THIS NODE IS REVOKED ({trust['this_node_revoked']}): "
                         "other nodes drop its bindings and traffic; its gateway answers "
                         "its clients 403")
    return "\n".join(lines)


def run_status(args: argparse.Namespace) -> int:
    ok, result = _request(args, ControlCommand.STATUS)
    if not ok:
        return EXIT_NOT_RUNNING
    print(json.dumps(result, indent=2) if args.json else format_status(result))
    return 0


#: ``ctl send`` waits for the outcome this much less than the client timeout.
SEND_WAIT_MARGIN_S = 0.5
#: How ``ctl send`` words an outcome (202: store-and-forward took it).
SEND_WORDS = {"held": "accepted, held", "delivered": "delivered", "failed": "failed"}
#: Exit status of ``ctl send`` when the message was refused or failed.
EXIT_SEND_FAILED = 3


def run_send(args: argparse.Namespace) -> int:
    wait_s = max(0.0, args.timeout_s - SEND_WAIT_MARGIN_S)
    ok, result = _request(args, ControlCommand.SEND, to=args.to, text=args.text, wait_s=wait_s)
    if not ok:
        return EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        code = ("" if result.get("code") is None
                else f" ({result['code']} {result.get('reason') or ''}".rstrip() + ")")
        outcome = SEND_WORDS.get(str(result.get("status")), str(result.get("status")))
        held = ("" if not result.get("msg_id")
                else f"; ctl outbox lists it as {str(result['msg_id'])[:OUTBOX_ID_CHARS]}")
        print(f"message {result.get('id')} to {result.get('to')}: {outcome}{code}{held}"
              .rstrip())
    return EXIT_SEND_FAILED if result.get("status") == "failed" else 0


def run_inbox(args: argparse.Namespace) -> int:
    ok, result = _request(args, ControlCommand.INBOX)
    if not ok:
        return EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for entry in result:
        when = time.strftime("%H:%M:%S", time.localtime(entry.get("received_at", 0)))
        print(f"{entry.get('seq')}  {when}  {entry.get('from')}: {entry.get('text')}")
    print(f"{len(result)} message(s)")
    return 0


def describe_held(entry: dict[str, Any]) -> str:
    """``queued``, ``held by X``, ``delivered to X`` or ``expired``."""
    state, holder = str(entry.get("state")), str(entry.get("holder"))
    if state == "held_by":
        return f"held by {holder}"
    if state == "delivered":
        return f"delivered to {holder}"
    return state


def format_outbox(entries: Sequence[dict[str, Any]]) -> str:
    """One row per held message; SEND is the id ``ctl send`` printed for it ("-": not
    sent with ``ctl send``, e.g. by a softphone, or sent before the node restarted)."""
    rows = [[str(e.get("msg_id"))[:OUTBOX_ID_CHARS],
             "-" if e.get("send_id") is None else str(e.get("send_id")), str(e.get("to")),
             time.strftime("%H:%M:%S", time.localtime(float(e.get("created", 0)))),
             describe_held(e) if e.get("own", True) else f"custody ({e.get('state')})"]
            for e in entries]
    table = format_table(["MESSAGE", "SEND", "TO", "CREATED", "STATUS"], rows)
    return f"{table}\n{len(entries)} message(s)"


def run_outbox(args: argparse.Namespace) -> int:
    extra = {"all": True} if args.all else {}
    ok, result = _request(args, ControlCommand.OUTBOX, **extra)
    if not ok:
        return EXIT_NOT_RUNNING
    print(json.dumps(result, indent=2) if args.json else format_outbox(result))
    return 0


def run_stop(args: argparse.Namespace) -> int:
    ok, _ = _request(args, ControlCommand.STOP)
    if not ok:
        return EXIT_NOT_RUNNING
    data_dir = socket_path(args).parent
    if args.wait:
        deadline = time.monotonic() + args.timeout_s
        while data_dir_locked(data_dir):
            if time.monotonic() > deadline:
                print(f"meshcomm ctl stop: node still running after {args.timeout_s} s",
                      file=sys.stderr)
                return EXIT_NOT_RUNNING
            time.sleep(STOP_POLL_S)
    print("stopping" if not args.wait else "stopped")
    return 0
