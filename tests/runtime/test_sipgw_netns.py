"""Two real `meshcomm handset` processes in two network namespaces (tools/testbed chain(2),
UDP radios), each with its SIP gateway on 127.0.0.1:5060 inside its namespace, driven with
`meshcomm ctl send` / `ctl inbox` / `ctl status`: the MESSAGE is delivered exactly once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.envcheck import require_root
from tests.integration.nodes import (
    Node,
    diagnostics,
    make_nodes,
    start_quick_handsets,
    stop_all,
    wait_for,
)
from tools.testbed import Testbed, chain

pytestmark = [pytest.mark.root, pytest.mark.slow]
CONVERGE_S = 20.0


def _ctl(tb: Testbed, node: Node, *args: str) -> object:
    out = tb.run(node.index, [sys.executable, "-m", "meshcomm.cli.main", "ctl",
                              "--data-dir", str(node.data_dir), "--timeout", "12", *args])
    return json.loads(out)


def test_ctl_send_between_two_namespaced_handsets_delivers_once(tmp_path: Path) -> None:
    require_root()
    with chain(2) as tb:
        nodes = make_nodes(tb, tmp_path)
        try:
            start_quick_handsets(tb, nodes)
            want = {"sip:unit0@incident.local", "sip:unit1@incident.local"}
            took = wait_for(lambda: all(n.who_aors() == want for n in nodes), CONVERGE_S)
            assert took is not None, diagnostics(nodes)
            sent = _ctl(tb, nodes[0], "send", "sip:unit1@incident.local", "on my way", "--json")
            assert isinstance(sent, dict) and sent["status"] == "delivered", diagnostics(nodes)
            inbox = _ctl(tb, nodes[1], "inbox", "--json")
            assert isinstance(inbox, list)
            assert [(e["from"], e["text"]) for e in inbox] == [
                ("sip:unit0@incident.local", "on my way")]
            status = _ctl(tb, nodes[1], "status", "--json")
            assert isinstance(status, dict)
            sip = status["sip"]
            assert sip["listen"]["udp_port"] == 5060 and sip["listen"]["tcp_port"] == 5060
            assert sip["counters"]["sip_from-mesh"] >= 1 and sip["inbox"] == 1
        finally:
            stop_all(nodes)
