"""One control-socket request for the ``meshcomm ctl`` actions that answer with an exit
code: the node not running is exit 1, a refusal exit 2, each said in one line on
stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final

from meshcomm.cli.handset_cmd import resolve_data_dir
from meshcomm.config import NodeConfig
from meshcomm.runtime.control import (
    CONTROL_SOCKET_FILE,
    ControlCommand,
    ControlError,
    NodeNotRunning,
    control_request,
)

EXIT_NOT_RUNNING: Final = 1
EXIT_REFUSED: Final = 2


def ask_node(args: argparse.Namespace, command: ControlCommand, label: str, /,
             **extra: Any) -> tuple[int, Any]:
    """(0, the answer), or (exit code, None) after saying why on stderr (``label``: the
    subcommand, as the refusal names it; ``extra`` goes to the node)."""
    path = resolve_data_dir(args, NodeConfig()) / CONTROL_SOCKET_FILE
    try:
        return 0, control_request(path, command, timeout_s=args.timeout_s, **extra)
    except NodeNotRunning as exc:
        print(f"meshcomm ctl {command.value}: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING, None
    except ControlError as exc:
        print(f"meshcomm ctl {command.value} {label}: {exc}", file=sys.stderr)
        return EXIT_REFUSED, None
