"""A whole node (NodeCore) with a real StoreForward core as the gateway's holder (sans-IO,
virtual time): a MESSAGE for a gone node is answered 202, held and delivered once when the
node is back; one too large to hold is answered 480 (the gateway does not crash)."""

from __future__ import annotations

from meshcomm.node.core import NodeCore
from meshcomm.node.storeforward import HeldState, SfPersist, StoreForward, StoreForwardConfig
from meshcomm.node.storeforward_wire import MAX_SIP_BYTES
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import IncomingMessage, RequestFailed, RequestSucceeded, UaEvent
from tests.node.gateway_net import DOMAIN, Net, registered

BOB = f"sip:bob@{DOMAIN}"
CONFIG = StoreForwardConfig(poll_interval_s=0.5, retry_initial_s=1.0, retry_max_s=2.0)


def _with_store_forward(net: Net, index: int) -> StoreForward:
    st = net.stations[index]
    sf = StoreForward(st.node, CONFIG, now=net.now)
    st.gw.holder = sf
    st.use(NodeCore(st.node, st.gw, sf))
    return sf


def _gone_bob() -> tuple[Net, StoreForward, UserAgent]:
    net = Net(3)
    sf = _with_store_forward(net, 0)
    _with_store_forward(net, 2)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 2, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(BOB)))
    net.stations[2].up = False                     # bob's node leaves (binding remains)
    return net, sf, alice


def _message_outcomes(events: list[UaEvent]) -> list[int]:
    return [e.status for e in events if isinstance(e, RequestSucceeded | RequestFailed)
            and e.method == "MESSAGE"]


def test_held_for_a_gone_node_then_delivered_exactly_once() -> None:
    net, sf, alice = _gone_bob()
    alice.message(BOB, "are you there")
    net.run_until(lambda: bool(_message_outcomes(net.events(0, 5070))), timeout_s=20)
    assert _message_outcomes(net.events(0, 5070)) == [202]
    assert [(s.to_aor, s.state) for s in sf.outbox()] == [(BOB, HeldState.QUEUED)]
    persisted = [e for e in net.stations[0].other_events if isinstance(e, SfPersist)]
    assert persisted, "the hold must be persisted"
    assert sf.next_timer() is not None and net.stations[0].sip.next_timer() is not None
    net.run_for(3.0)
    net.stations[2].up = True                      # back: the next retry reaches it
    net.run_until(lambda: [s.state for s in sf.outbox()] == [HeldState.DELIVERED],
                  timeout_s=30)
    net.run_for(5.0)
    got = [e for e in net.events(2, 5072) if isinstance(e, IncomingMessage)]
    assert [m.body for m in got] == [b"are you there"]
    assert net.stations[0].gw.counters["messages_held"] == 1


def test_message_too_large_to_hold_is_answered_480() -> None:
    net, sf, alice = _gone_bob()
    alice.message(BOB, "x" * (MAX_SIP_BYTES + 100))
    net.run_until(lambda: bool(_message_outcomes(net.events(0, 5070))), timeout_s=20)
    assert _message_outcomes(net.events(0, 5070)) == [480]
    assert net.stations[0].gw.counters["messages_not_held"] == 1
    assert sf.outbox() == []
