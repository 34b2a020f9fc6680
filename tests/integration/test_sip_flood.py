"""A MESSAGE flood from a hundred sockets against a real node's gateway (issue 8, done-when).

Two namespaces in a chain, each running a real ``meshcomm`` handset with 15 ms of radio
delay: node 0 is flooded, node 1 serves ``bob`` (a client that answers every MESSAGE) and
``ghost`` (registered by a socket that then closed: his MESSAGEs go unanswered, so the
gateway would put them into store-and-forward). ``alice``, registered at node 0, sends
MESSAGEs to bob; her latency is measured unloaded, then while 100 UDP sockets in node 0's
namespace send 500 MESSAGE/s to ghost for 20 s. Required: every one of alice's MESSAGEs
answered 200, her p95 within twice the unloaded p95, the flood refused with 503 +
Retry-After, and at most the anonymous store-and-forward quota of the flood held.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from meshcomm.node.gateway.admission import (
    ANON_HOLD_BURST,
    ANON_HOLD_RATE_PER_S,
    ANON_HOST_HOLD_BURST,
)
from tools.testbed import Testbed
from tools.testbed.nodes import wait_until
from tools.testbed.sipclient import SipUac, SipUas

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

DOMAIN = "incident.local"
IMPAIR = "delay=15ms"
CONVERGE_S = 20.0
FLOOD_SOURCES = 100
FLOOD_RATE_PER_S = 500
FLOOD_S = 20.0
#: alice sends a MESSAGE this often during the flood (80 samples in 20 s).
ALICE_INTERVAL_S = 0.25
UNLOADED_SAMPLES = 30
#: After the flood: long enough for every admitted flood MESSAGE to time out (6 s).
SETTLE_S = 10.0


def _register_and_vanish(tb: Testbed, node: int, user: str) -> None:
    """Register ``user`` from a socket that is then closed (nobody answers for it)."""
    sock = tb.loopback_udp(node)
    try:
        assert SipUas(sock, user, sock).register(), f"REGISTER {user} failed"
    finally:
        sock.close()


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class Flood:
    """``tools.testbed.sipflood`` in node ``node``'s namespace, as its own process."""

    def __init__(self, tb: Testbed, node: int, aor: str) -> None:
        self.proc = tb.popen(node, [sys.executable, "-m", "tools.testbed.sipflood", "--to", aor,
                                    "--sources", str(FLOOD_SOURCES),
                                    "--rate", str(FLOOD_RATE_PER_S),
                                    "--seconds", str(FLOOD_S)],
                             stdout=subprocess.PIPE, cwd=str(ROOT))
        self.result: dict[str, Any] = {}

    def running(self) -> bool:
        return self.proc.poll() is None

    def finish(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=FLOOD_S + 30)
        self.result = json.loads(out.decode().strip().splitlines()[-1])
        return self.result


def _alice_during(uac: SipUac, flood: Flood, bob: str) -> list[float | None]:
    out: list[float | None] = []
    time.sleep(0.5)                                  # the flood is under way
    while flood.running():
        t0 = time.monotonic()
        out.append(uac.message(bob))
        time.sleep(max(0.0, ALICE_INTERVAL_S - (time.monotonic() - t0)))
    return out


def test_a_flood_from_100_sockets_neither_starves_a_registered_client_nor_fills_the_store(
        chain2: Testbed) -> None:
    tb = chain2
    tb.start_node(0, name="n0", impair=IMPAIR)
    tb.start_node(1, name="n1", impair=IMPAIR)
    bob_sock = tb.loopback_udp(1)
    bob = SipUas(bob_sock, "bob", tb.loopback_udp(1))
    assert bob.register()
    _register_and_vanish(tb, 1, "ghost")
    serving = threading.Thread(target=bob.serve, daemon=True)
    serving.start()
    alice_sock = tb.loopback_udp(0)
    assert SipUas(alice_sock, "alice", alice_sock).register()   # alice is a registered client
    uac = SipUac(alice_sock, tb.loopback_udp(0), user="alice")
    ghost = f"sip:ghost@{DOMAIN}"
    known = wait_until(lambda: {bob.aor, ghost} <= (tb.node(0).who_aors() or set()),
                       CONVERGE_S)
    assert known is not None, tb.describe()
    try:
        uac.message(bob.aor)                                        # warm the route
        unloaded = [uac.message(bob.aor) for _ in range(UNLOADED_SAMPLES)]
        assert None not in unloaded, unloaded
        flood = Flood(tb, 0, ghost)
        loaded = _alice_during(uac, flood, bob.aor)
        result = flood.finish()
        time.sleep(SETTLE_S)
        outbox = tb.node(0).request("outbox")
        gw = (tb.node(0).status().get("sip") or {}).get("counters", {})
    finally:
        bob.stop()
        serving.join(timeout=2)
    base = _p95([t for t in unloaded if t is not None])
    answered = [t for t in loaded if t is not None]
    held_flood = [r for r in outbox if r.get("to") == ghost] if isinstance(outbox, list) else []
    quota = min(ANON_HOST_HOLD_BURST, ANON_HOLD_BURST) + ANON_HOLD_RATE_PER_S * (
        FLOOD_S + SETTLE_S) + 1
    print(f"\nalice unloaded p95 {base * 1000:.1f} ms; during the flood {len(answered)}/"
          f"{len(loaded)} answered, p95 {_p95(answered) * 1000:.1f} ms, max "
          f"{max(answered) * 1000:.1f} ms\nflood: {result}; held from the flood "
          f"{len(held_flood)} (quota {quota:.0f})"
          f"\ngateway: { {k: v for k, v in gw.items() if k.startswith(('shed', 'hold'))} }")
    assert len(answered) == len(loaded) and len(loaded) >= FLOOD_S / ALICE_INTERVAL_S * 0.5
    assert _p95(answered) <= 2 * base, (base, sorted(answered)[-5:])
    answers = {int(k): v for k, v in result["answers"].items()}
    assert answers.get(503, 0) >= result["sent"] * 0.5 and result["no_retry_after"] == 0
    assert sum(answers.values()) >= result["sent"] * 0.95      # read, not dropped
    assert len(held_flood) <= quota
