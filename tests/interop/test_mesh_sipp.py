"""SIPp scenarios against the nodes' gateways across a 5-node chain with 10% loss per link.

* ``register.xml``: REGISTER at node 0's gateway gets 200 OK, and the binding spreads: the
  far node lists the AoR.
* ``message_uac.xml`` at node 0 -> ``message_uas.xml`` (registered at node 4 first): the
  MESSAGE crosses 4 hops, the UAS answers 200 and the 200 comes back to the UAC.
* ``invite_uac.xml`` at node 0 -> ``invite_uas.xml`` at node 4: INVITE, 180, 200 with
  Record-Route, ACK and BYE along the route set, 200 for BYE.

SIPp's exit status is 0 only when every step of its scenario passed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.envcheck import require_program, require_root
from tests.interop.clients import DOMAIN, SippRun, run_sipp, start_sipp, wait_binding
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
