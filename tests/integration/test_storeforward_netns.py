"""Store-and-forward with real processes in network namespaces, driven by ``meshcomm ctl``.

chain(3): ``alice`` (``meshcomm handset``) - ``meshcomm relay`` - ``bob`` (``meshcomm
handset``). Bob has been on the mesh and crashed (SIGKILL: his binding stays, no route
answers). ``meshcomm ctl send`` from alice is accepted and held (202, "accepted, held");
``ctl outbox`` shows it queued, then held by the relay. The relay process is stopped with
SIGTERM and started again (custody back from its SQLite file); only then is bob's node
started again. Bob's ``ctl inbox`` shows the message exactly once and alice's ``ctl outbox``
says delivered.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

import pytest

from tools.testbed import Testbed
from tools.testbed.nodes import ctl_argv, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

ALICE, RELAY, BOB = 0, 1, 2
DOMAIN = "incident.local"
BOB_AOR = f"sip:bob@{DOMAIN}"
RELAY_AOR = f"sip:relay@{DOMAIN}"
CONVERGE_S = 20.0
#: ``ctl send`` waits for the outcome (the gateway's MESSAGE timeout is 6 s).
SEND_TIMEOUT_S = 20.0
CUSTODY_S = 15.0
DELIVERY_S = 40.0
#: After the delivery, watch this long for a second copy (holders retry after 2 s).
DUPLICATE_WATCH_S = 6.0
CTL_TIMEOUT_S = 5.0


def ctl(tb: Testbed, node: int, *action: str,
        timeout_s: float = CTL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run the real ``meshcomm ctl`` against a node's data dir."""
    return subprocess.run(ctl_argv(tb.node(node), *action, timeout_s=timeout_s),
                          capture_output=True, text=True, timeout=timeout_s + 10, check=False)


def ctl_json(tb: Testbed, node: int, *action: str) -> Any:
    done = ctl(tb, node, *action, "--json")
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)


def outbox(tb: Testbed) -> list[dict[str, Any]]:
    rows = ctl_json(tb, ALICE, "outbox")
    return rows if isinstance(rows, list) else []


def inbox_texts(tb: Testbed, node: int) -> list[str]:
    rows = ctl_json(tb, node, "inbox")
    return [str(r.get("text")) for r in rows] if isinstance(rows, list) else []


def test_ctl_send_held_relay_restarted_bob_joins_delivered_once(chain3: Testbed) -> None:
    tb = chain3
    tb.start_node(ALICE, name="alice")
    tb.start_node(RELAY, role="relay", name="relay")
    tb.start_node(BOB, name="bob")
    known = wait_until(lambda: BOB_AOR in (tb.node(ALICE).who_aors() or ()), CONVERGE_S)
    assert known is not None, tb.describe()
    tb.stop_node(BOB, signal.SIGKILL)          # gone without a de-registration

    text = f"held for bob {time.monotonic_ns()}"
    t0 = time.monotonic()
    sent = ctl(tb, ALICE, "send", BOB_AOR, text, timeout_s=SEND_TIMEOUT_S)
    print(f"\nctl send: {sent.stdout.strip()} after {time.monotonic() - t0:.2f} s")
    assert sent.returncode == 0, f"{sent.stdout}{sent.stderr}\n{tb.describe()}"
    assert "accepted, held (202" in sent.stdout, sent.stdout
    rows = outbox(tb)
    assert len(rows) == 1 and rows[0]["to"] == BOB_AOR, rows
    assert rows[0]["state"] in ("queued", "held_by"), rows

    custody = wait_until(lambda: [r["state"] for r in outbox(tb)] == ["held_by"], CUSTODY_S,
                         poll_s=0.5)
    assert custody is not None, f"{outbox(tb)}\n{tb.describe()}"
    listing = ctl(tb, ALICE, "outbox").stdout
    assert f"held by {RELAY_AOR}" in listing, listing

    tb.restart_node(RELAY, signal.SIGTERM)
    relay_sf = tb.node(RELAY).status()["store_forward"]
    print(f"relay after restart: {relay_sf}")
    assert relay_sf["counters"].get("sf_restored") == 1, relay_sf
    assert relay_sf["held_for_others"] == 1, relay_sf

    tb.restart_node(BOB)                       # bob's node comes back only now
    t1 = time.monotonic()
    delivered = wait_until(lambda: text in inbox_texts(tb, BOB), DELIVERY_S, poll_s=0.5)
    assert delivered is not None, f"never delivered\n{tb.describe()}"
    print(f"delivered to bob {time.monotonic() - t1:.2f} s after bob restarted")
    receipt = wait_until(lambda: [r["state"] for r in outbox(tb)] == ["delivered"],
                         DELIVERY_S, poll_s=0.5)
    assert receipt is not None, f"{outbox(tb)}\n{tb.describe()}"
    time.sleep(DUPLICATE_WATCH_S)
    assert inbox_texts(tb, BOB).count(text) == 1
    assert f"delivered to {BOB_AOR}" in ctl(tb, ALICE, "outbox").stdout
    bob_sf = tb.node(BOB).status()["store_forward"]
    assert bob_sf["counters"].get("sf_delivered_local") == 1, bob_sf
    status_text = ctl(tb, ALICE, "status").stdout
    assert "store    own:" in status_text and "delivered 1" in status_text, status_text
