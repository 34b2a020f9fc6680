"""The built-in UA's sends are linked to their store-and-forward ids (``ctl send`` <->
``ctl outbox``): a held send reports the ``msg_id`` the holder keeps, and the gateway maps
that id back to the send; a softphone's held MESSAGE maps to no send."""

from __future__ import annotations

from meshcomm.node.gateway.types import SendStatus
from tests.node.gateway_net import DOMAIN
from tests.node.test_gateway_storeforward import BOB, _gone_bob, _message_outcomes


def test_held_send_reports_the_holders_msg_id_and_maps_back() -> None:
    net, sf, alice = _gone_bob()
    gw = net.stations[0].gw
    failed = gw.send_message(f"sip:nobody@{DOMAIN}", "lost", net.now)   # 404, never held
    held = gw.send_message(BOB, "for bob", net.now)
    net.run_until(lambda: all(gw.outbox[i].status is not SendStatus.PENDING
                              for i in (failed, held)), timeout_s=20)
    assert (gw.outbox[failed].status, gw.outbox[failed].msg_id) == (SendStatus.FAILED, None)
    result = gw.outbox[held]
    assert (result.status, result.code) == (SendStatus.HELD, 202)
    assert [s.msg_id for s in sf.outbox()] == [result.msg_id]
    assert result.msg_id is not None and gw.send_id_of(result.msg_id) == held

    alice.message(BOB, "from a softphone")
    net.run_until(lambda: bool(_message_outcomes(net.events(0, 5070))), timeout_s=20)
    assert _message_outcomes(net.events(0, 5070)) == [202]
    softphone = [s.msg_id for s in sf.outbox() if s.msg_id != result.msg_id]
    assert len(softphone) == 1 and gw.send_id_of(softphone[0]) is None
