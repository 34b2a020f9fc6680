"""A call between two real `meshcomm handset` processes in two network namespaces
(tools/testbed chain(2), UDP radios), each with its SIP gateway on 127.0.0.1:5060 inside its
namespace. A small SIP phone (tests/runtime/ua_media.py: meshcomm.sip.ua on a UDP socket
plus an RTP socket) runs as a child process in each namespace: the one in ns0 calls the one
in ns1; both stream 20 ms RTP packets through their own node's call ports and the mesh;
packets arrive both ways for the whole call and the call ports are closed after the BYE."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.envcheck import require_root
from tests.integration.nodes import ctl_json, start_quick_handsets
from tests.runtime.ua_media import PACKET_INTERVAL_S
from tools.testbed import Testbed, chain
from tools.testbed.nodes import REPO, MeshProcess, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]
CONVERGE_S = 20.0
CALL_S = 4.0
CHILD_TIMEOUT_S = 60.0
BOB = "sip:bob@incident.local"


def _phone(tb: Testbed, index: int, *args: str) -> subprocess.Popen[bytes]:
    return tb.popen(index, [sys.executable, "-m", "tests.runtime.ua_media", *args],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)


def _media(tb: Testbed, node: MeshProcess) -> dict[str, object]:
    status = ctl_json(tb, node, "status")
    assert isinstance(status, dict)
    media = status["media"]
    assert isinstance(media, dict)
    return media


def _report(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, f"phone printed nothing; exit {proc.returncode}: {err.decode()[-2000:]}"
    report = json.loads(lines[-1])
    assert isinstance(report, dict)
    return report


def test_call_between_two_namespaced_handsets_carries_rtp_both_ways(tmp_path: Path) -> None:
    require_root()
    with chain(2) as tb:
        tb.use_workdir(tmp_path)
        nodes = start_quick_handsets(tb)
        want = {"sip:unit0@incident.local", "sip:unit1@incident.local"}
        took = wait_until(lambda: all(n.who_aors() == want for n in nodes), CONVERGE_S)
        assert took is not None, tb.describe()
        callee = _phone(tb, 1, "callee", "--user", "bob")
        seen = wait_until(lambda: BOB in (nodes[0].who_aors() or set()), CONVERGE_S)
        assert seen is not None, tb.describe()
        caller = _phone(tb, 0, "caller", "--user", "alice", "--to", BOB,
                        "--seconds", str(CALL_S))
        a, b = _report(caller), _report(callee)
        assert a["established"] and b["established"], (a, b, tb.describe())
        assert (a["end_reason"], b["end_reason"]) == ("LOCAL_BYE", "REMOTE_BYE")
        expected = CALL_S / PACKET_INTERVAL_S
        for sender, receiver in ((a, b), (b, a)):
            seqs = receiver["received_seqs"]
            assert isinstance(seqs, list) and isinstance(sender["sent"], int)
            # Real sockets and processes, a lossless veth: nearly all arrive.
            assert len(seqs) >= 0.9 * expected, (len(seqs), sender["sent"])
            assert max(seqs) >= sender["sent"] - 0.1 * expected      # to the end of the call
        for node in nodes:
            media = _media(tb, node)
            assert media["calls"] == 0 and media["open_ports"] == 0, media
            counters = media["counters"]
            assert isinstance(counters, dict)
            assert counters["calls_ended_hangup"] == 1
            assert counters["rtp_to_mesh"] >= 0.9 * expected
            assert counters["rtp_to_client"] >= 0.9 * expected
