"""``meshcomm ctl handover``: pass a role address to another node's key (issue 12.3).

On the current holder's node::

    meshcomm ctl handover give sip:ops-chief@fire.example --to <new holder's public key>

prints the signed hand-over (hex); on the new holder's node::

    meshcomm ctl handover accept <hex>

The new holder's bindings of the address carry it from then on; every node checks it and
moves the address (``ctl who`` shows "handed over <time>", the journal a
``binding.conflict`` for the displaced claim).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from meshcomm.cli.ctl_ask import ask_node
from meshcomm.runtime.control import ControlCommand


def register_handover(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("handover", help="pass a role address to another node's key",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="handover_action", metavar="ACTION", required=True)
    give = actions.add_parser("give", help="sign a hand-over (on the holder's node)")
    give.add_argument("aor", metavar="AOR", help="e.g. sip:ops-chief@fire.example")
    give.add_argument("--to", required=True, metavar="KEYHEX",
                      help="the new holder's public key (its ctl status)")
    give.set_defaults(handler=run_handover)
    accept = actions.add_parser("accept", help="take a hand-over (on the new holder's node)")
    accept.add_argument("handover", metavar="HEX")
    accept.set_defaults(handler=run_handover)


def run_handover(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = ({"action": "give", "aor": args.aor, "to": args.to}
                             if args.handover_action == "give"
                             else {"action": "accept", "handover": args.handover})
    code, result = ask_node(args, ControlCommand.HANDOVER, args.handover_action, **extra)
    if code:
        return code
    print(json.dumps(result, indent=2))
    return 0
