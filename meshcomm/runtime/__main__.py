"""``python -m meshcomm.runtime handset|relay|ctl ...``: the node commands without the full CLI.

Same parsers and handlers as ``meshcomm handset``, ``meshcomm relay`` and ``meshcomm ctl``.
"""

from __future__ import annotations

import argparse
import sys

from meshcomm.cli import ctl_cmd, handset_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m meshcomm.runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    handset_cmd.register(sub)
    ctl_cmd.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
