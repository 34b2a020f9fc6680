"""SIPp scenarios against the nodes' gateways across a 5-node chain with 10% loss per link.

* ``register.xml``: REGISTER at node 0's gateway gets 200 OK, and the binding spreads: the
  far node lists the AoR.
* ``message_uac.xml`` at node 0 -> ``message_uas.xml`` (registered at node 4 first): the
  MESSAGE crosses 4 hops, the UAS answers 200 and the 200 comes back to the UAC.
* ``invite_uac.xml`` at node 0 -> ``invite_uas.xml`` at node 4: INVITE, 180, 200 with
  Record-Route, ACK and BYE along the route set, 200 for BYE.
* SIPp's own ``-sn uac`` at node 0, given only the gateway's address and ``-s service``,
  calls SIPp's own ``-sn uas`` registered (``register.xml`` from its port) at node 4: 100
  calls, 0 failed. The uac sends ACK and BYE to ``sip:service@127.0.0.1:5060`` with no
  Route and the uas never echoes Record-Route: the gateways' contact rewriting and dialog
  routing carry them (``meshcomm/node/gateway/contacts.py``). Each call lasts 1 s
  (``-d 1000``): with 0 s the uac sends its BYE right behind its ACK, and at 10% loss per
  link the BYE sometimes overtakes an ACK that a hop retransmits; the uas then takes the
  late ACK as unexpected (a SIPp strictness, not a lost request: ACK is optional before
  BYE in its scenario).

SIPp's exit status is 0 only when every step of its scenario passed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.envcheck import require_program, require_root
from tests.interop.clients import (
    DOMAIN,
    SippRun,
    run_sipp,
    sipp_counts,
    start_sipp,
    start_sipp_builtin,
    wait_binding,
)
from tools.testbed import Testbed, chain

pytestmark = [pytest.mark.root, pytest.mark.slow]

N_NODES = 5
LOSS_PERCENT = 10
FAR = N_NODES - 1
CONVERGE_S = 30.0
#: Ports inside the namespaces (private to each; see tests/interop/clients.py).
UAC_PORT, UAS_PORT = 5080, 5090


@pytest.fixture(scope="module")
def tb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    require_root()
    require_program("sipp", "sip-tester")
    with chain(N_NODES) as bed:
        bed.use_workdir(tmp_path_factory.mktemp("mesh-sipp"))
        bed.set_loss_everywhere(LOSS_PERCENT)
        for i in range(N_NODES):
            bed.start_node(i, name=f"n{i}")
        yield bed


def _passed(run: SippRun, tb: Testbed) -> None:
    code = run.wait()
    assert code == 0, f"sipp {run.scenario} exit {code}\n{run.describe()}\n{tb.describe()}"


def _register(tb: Testbed, node: int, user: str, port: int) -> None:
    _passed(run_sipp(tb, node, "register", service=user, port=port), tb)


def test_register(tb: Testbed) -> None:
    _register(tb, 0, "sipp-reg", UAC_PORT)
    took = wait_binding(tb, FAR, f"sip:sipp-reg@{DOMAIN}", CONVERGE_S)
    assert took is not None, f"the far node never listed the binding\n{tb.describe()}"
    print(f"\nSIPp REGISTER at node 0: binding listed {FAR} hops away after {took:.2f} s")


def _uas_registered(tb: Testbed, user: str) -> None:
    _register(tb, FAR, user, UAS_PORT)
    assert wait_binding(tb, 0, f"sip:{user}@{DOMAIN}", CONVERGE_S) is not None, tb.describe()


def test_message(tb: Testbed) -> None:
    _register(tb, 0, "sipp-uac", UAC_PORT)
    _uas_registered(tb, "sipp-msg")
    uas = start_sipp(tb, FAR, "message_uas", service="sipp-msg", port=UAS_PORT)
    uac = run_sipp(tb, 0, "message_uac", service="sipp-msg", port=UAC_PORT)
    _passed(uac, tb)
    _passed(uas, tb)


def test_invite_ack_bye(tb: Testbed) -> None:
    _register(tb, 0, "sipp-uac", UAC_PORT)
    _uas_registered(tb, "sipp-call")
    uas = start_sipp(tb, FAR, "invite_uas", service="sipp-call", port=UAS_PORT)
    uac = run_sipp(tb, 0, "invite_uac", service="sipp-call", port=UAC_PORT)
    _passed(uac, tb)
    _passed(uas, tb)


BUILTIN_CALLS = 100
BUILTIN_RATE = 10.0
BUILTIN_UAC_PORT, BUILTIN_UAS_PORT = 5100, 5110
BUILTIN_CALL_MS = 1000


def test_stock_sn_uac_calls_stock_sn_uas_four_hops_away(tb: Testbed) -> None:
    _register(tb, FAR, "service", BUILTIN_UAS_PORT)
    assert wait_binding(tb, 0, f"sip:service@{DOMAIN}", CONVERGE_S) is not None, tb.describe()
    budget = 60.0 + BUILTIN_CALLS / BUILTIN_RATE
    uas = start_sipp_builtin(tb, FAR, "uas", port=BUILTIN_UAS_PORT, calls=BUILTIN_CALLS,
                             timeout_s=budget)
    uac = start_sipp_builtin(tb, 0, "uac", port=BUILTIN_UAC_PORT, calls=BUILTIN_CALLS,
                             rate=BUILTIN_RATE, timeout_s=budget,
                             extra=("-d", str(BUILTIN_CALL_MS)))
    code = uac.wait(budget + 10)
    counts = sipp_counts(uac)
    print(f"\nSIPp -sn uac -> -sn uas, 4 hops at {LOSS_PERCENT}% loss: {counts}")
    assert code == 0, f"{uac.describe()}\n{uas.describe()}\n{tb.describe()}"
    assert counts.get("SuccessfulCall(C)") == BUILTIN_CALLS, counts
    assert counts.get("FailedCall(C)") == 0, counts
    _passed(uas, tb)
