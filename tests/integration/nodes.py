"""Helpers for the real-process tests, on top of :mod:`tools.testbed` (which starts, queries
and stops the ``meshcomm`` processes: :meth:`tools.testbed.Testbed.start_node`)."""

from __future__ import annotations

import json
from typing import Final

from tools.testbed import Testbed
from tools.testbed.nodes import MeshProcess, ctl_argv

#: Fast beacons for short tests: HELLO every 0.3 s, neighbour timeout 1.5 s, 0.2 s
#: shutdown grace.
QUICK_HANDSET_ARGS: Final = ("--set", "overlay.hello_interval_s=0.3",
                             "--set", "overlay.neighbour_timeout_s=1.5",
                             "--shutdown-grace", "0.2")
#: ``meshcomm ctl --timeout`` of :func:`ctl_json`.
CTL_TIMEOUT_S: Final = 12.0


def start_quick_handsets(tb: Testbed) -> list[MeshProcess]:
    """Start a ``unit<i>`` handset with fast beacons in every node (not waiting for it)."""
    return [tb.start_node(i, name=f"unit{i}", extra_args=QUICK_HANDSET_ARGS, wait=False)
            for i in range(tb.n_nodes)]


def ctl_json(tb: Testbed, node: MeshProcess, *action: str) -> object:
    """Run the real ``meshcomm ctl ACTION --json`` inside the node's namespace."""
    out = tb.run(node.index, ctl_argv(node, *action, "--json", timeout_s=CTL_TIMEOUT_S))
    return json.loads(out)
