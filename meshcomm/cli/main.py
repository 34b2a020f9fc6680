"""The ``meshcomm`` command: serverless SIP for responders over ad-hoc meshes."""

from __future__ import annotations

import argparse
import importlib
import sys

from meshcomm import __version__

#: Sub-command modules; each has ``register(subparsers)`` and sets ``handler`` defaults.
COMMAND_MODULES = (
    "meshcomm.cli.demo_cmd",
    "meshcomm.cli.sim_cmd",
    "meshcomm.cli.handset_cmd",
    "meshcomm.cli.dht_node_cmd",
    "meshcomm.cli.ctl_cmd",
    "meshcomm.cli.keys_cmd",
    "meshcomm.cli.revoke_cmd",
    "meshcomm.cli.role_handover_cmd",
    "meshcomm.cli.config_cmd",
    "meshcomm.cli.journal_cmd",
    "meshcomm.cli.export_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshcomm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"meshcomm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command still being built
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        status: int = handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
