"""``meshcomm ctl user``: the SIP users the local gateway authenticates (docs/sip-auth.md).

* ``ctl user add AOR`` asks for the password twice on a terminal, or reads one line from
  stdin (``echo "$PW" | meshcomm ctl user add sip:alice@incident.local``); the running
  node hashes it at once (HA1 for SHA-256 and MD5 in its realm) and stores it durably in
  its data dir. Adding an AoR again replaces its password.
* ``ctl user remove AOR``, ``ctl user list [--json]`` (never a password or a hash).
* ``ctl user hash AOR --realm REALM`` needs no running node: it prints the line of a
  ``[sip] users_file`` (HA1s, no password) for provisioning devices before deployment.

Exit status 0, 1 when the node is not running, 2 for a refused request (bad AoR, empty
or mismatched password, a user that is not stored).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from meshcomm.cli.ctl_ask import EXIT_REFUSED, ask_node
from meshcomm.errors import DecodeError
from meshcomm.node.gateway.users import MAX_PASSWORD_CHARS, format_user, make_user
from meshcomm.runtime.control import ControlCommand


def register_user(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = sub.add_parser("user", help="SIP users the gateway authenticates (digest)",
                          description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = user.add_subparsers(dest="user_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user or change its password")
    add.add_argument("aor", metavar="AOR", help="e.g. sip:alice@incident.local")
    add.set_defaults(handler=run_add)
    remove = actions.add_parser("remove", help="remove a stored user")
    remove.add_argument("aor", metavar="AOR")
    remove.set_defaults(handler=run_remove)
    listing = actions.add_parser("list", help="list the users (never passwords)")
    listing.add_argument("--json", action="store_true", help="print a JSON object")
    listing.set_defaults(handler=run_list)
    hashing = actions.add_parser("hash", help="print a users_file line (no node needed)")
    hashing.add_argument("aor", metavar="AOR")
    hashing.add_argument("--realm", required=True,
                         help="the gateway's realm ([sip] auth_realm, default node.domain)")
    hashing.set_defaults(handler=run_hash)


def read_password(prompt_tty: bool) -> str:
    """The password: asked twice on a terminal, else one line of stdin (its newline
    removed). DecodeError when empty, too long or the two entries differ."""
    if prompt_tty:
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise DecodeError("the two passwords differ")
        password = first
    else:
        password = sys.stdin.readline(MAX_PASSWORD_CHARS + 2).rstrip("\r\n")
    if not password:
        raise DecodeError("empty password")
    return password


def _ask(args: argparse.Namespace, **extra: Any) -> tuple[int, Any]:
    return ask_node(args, ControlCommand.USER, args.user_action, **extra)


def run_add(args: argparse.Namespace) -> int:
    try:
        password = read_password(sys.stdin.isatty())
    except DecodeError as exc:
        print(f"meshcomm ctl user add: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    status, result = _ask(args, action="add", aor=args.aor, password=password)
    if status:
        return status
    verb = "password changed for" if result.get("replaced") else "added"
    note = "" if result.get("required") else (
        " (authentication is off on this loopback listener; set [sip] require_auth = true "
        "to use it)")
    print(f"{verb} {result.get('aor')} (realm {result.get('realm')}){note}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    status, result = _ask(args, action="remove", aor=args.aor)
    if status:
        return status
    print(f"removed {result.get('aor')}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    status, result = _ask(args, action="list")
    if status:
        return status
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    state = "required" if result.get("required") else "off (loopback listener)"
    print(f"digest authentication {state}, realm {result.get('realm')}")
    for row in result.get("users", []):
        usable = "" if row.get("usable") else "  (other realm: cannot authenticate)"
        print(f"{row.get('aor')}  {'/'.join(row.get('algorithms', []))}  "
              f"{row.get('source')}{usable}")
    print(f"{len(result.get('users', []))} user(s)")
    return 0


def run_hash(args: argparse.Namespace) -> int:
    try:
        print(format_user(make_user(args.aor, read_password(sys.stdin.isatty()), args.realm)))
    except DecodeError as exc:
        print(f"meshcomm ctl user hash: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return 0
