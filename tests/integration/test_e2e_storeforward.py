"""Store-and-forward end to end with real processes (issue 4, done-when).

Three namespaces in a chain: ``alice`` (handset, node 0), a ``meshcomm relay`` (node 1) and
``bob`` (handset, node 2). Bob is known to the mesh and then vanishes (SIGKILL: his binding
stays, no route answers). Alice sends him a MESSAGE with ``ctl send``: it is accepted for
store-and-forward (202, status ``held``). Alice's node is then killed too, so only the relay
can deliver; the relay is restarted (its custody must survive in SQLite); bob's node comes
back with the same data dir. Bob's inbox must show the message exactly once.
"""

from __future__ import annotations

import secrets
import signal
import time

import pytest

from tools.testbed import Testbed
from tools.testbed.nodes import wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

ALICE, RELAY, BOB = 0, 1, 2
DOMAIN = "incident.local"
CONVERGE_S = 20.0
#: ``ctl send`` waits this long for the outcome (held / delivered).
SEND_WAIT_S = 25.0
DELIVERY_S = 40.0
#: After the delivery, watch this long for a second copy.
DUPLICATE_WATCH_S = 5.0


def _inbox_texts(tb: Testbed, node: int) -> list[str] | None:
    try:
        entries = tb.node(node).request("inbox", since=0)
    except Exception:  # not answering (yet): keep polling
        return None
    return [str(e.get("text")) for e in entries] if isinstance(entries, list) else None


def test_message_held_by_restarted_relay_delivered_exactly_once(chain3: Testbed) -> None:
    tb = chain3
    tb.start_node(ALICE, name="alice")
    tb.start_node(RELAY, role="relay", name="relay")
    tb.start_node(BOB, name="bob")
    bob_aor = f"sip:bob@{DOMAIN}"
    known = wait_until(lambda: bob_aor in (tb.node(ALICE).who_aors() or ())
                       and f"sip:alice@{DOMAIN}" in (tb.node(BOB).who_aors() or ()),
                       CONVERGE_S)
    assert known is not None, tb.describe()

    tb.stop_node(BOB, signal.SIGKILL)  # gone without a de-registration: binding stays
    text = f"held-{secrets.token_hex(6)}"
    t0 = time.monotonic()
    result = tb.node(ALICE).request("send", to=bob_aor, text=text, wait_s=SEND_WAIT_S,
                                    timeout_s=SEND_WAIT_S + 5)
    print(f"\nctl send to absent bob: {result} after {time.monotonic() - t0:.2f} s")
    assert isinstance(result, dict)
    assert result["status"] == "held", f"{result}\n{tb.describe()}"
    assert result["code"] == 202, result

    tb.stop_node(ALICE, signal.SIGKILL)  # only the relay's custody can deliver now
    print(f"relay status before restart: {tb.node(RELAY).status().get('sip')}")
    tb.restart_node(RELAY, signal.SIGTERM)
    tb.restart_node(BOB)
    t1 = time.monotonic()
    delivered = wait_until(lambda: text in (_inbox_texts(tb, BOB) or ()), DELIVERY_S)
    assert delivered is not None, f"never delivered\n{tb.describe()}"
    print(f"delivered to bob {time.monotonic() - t1:.2f} s after relay and bob restarted")
    time.sleep(DUPLICATE_WATCH_S)  # a second holder's copy would arrive in this window
    copies = (_inbox_texts(tb, BOB) or []).count(text)
    assert copies == 1, f"delivered {copies} times"
