"""Two real `meshcomm handset` processes in two network namespaces (tools/testbed chain(2),
UDP radios), each with its SIP gateway on 127.0.0.1:5060 inside its namespace, driven with
`meshcomm ctl send` / `ctl inbox` / `ctl status`: the MESSAGE is delivered exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.envcheck import require_root
from tests.integration.nodes import ctl_json, start_quick_handsets
from tools.testbed import chain
from tools.testbed.nodes import wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]
CONVERGE_S = 20.0


def test_ctl_send_between_two_namespaced_handsets_delivers_once(tmp_path: Path) -> None:
    require_root()
    with chain(2) as tb:
        tb.use_workdir(tmp_path)
        nodes = start_quick_handsets(tb)
        want = {"sip:unit0@incident.local", "sip:unit1@incident.local"}
        took = wait_until(lambda: all(n.who_aors() == want for n in nodes), CONVERGE_S)
        assert took is not None, tb.describe()
        sent = ctl_json(tb, nodes[0], "send", "sip:unit1@incident.local", "on my way")
        assert isinstance(sent, dict) and sent["status"] == "delivered", tb.describe()
        inbox = ctl_json(tb, nodes[1], "inbox")
        assert isinstance(inbox, list)
        assert [(e["from"], e["text"]) for e in inbox] == [
            ("sip:unit0@incident.local", "on my way")]
        status = ctl_json(tb, nodes[1], "status")
        assert isinstance(status, dict)
        sip = status["sip"]
        assert sip["listen"]["udp_port"] == 5060 and sip["listen"]["tcp_port"] == 5060
        assert sip["counters"]["sip_from-mesh"] >= 1 and sip["inbox"] == 1
