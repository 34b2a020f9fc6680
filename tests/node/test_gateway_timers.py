"""The gateway's RFC 3261 timers come from one TimerConfig: the field config's ``[sip]``
t1_s/t2_s feed ``GatewayConfig.timers``, which paces request retransmission toward a
silent local UDP client (T1 doubling, capped at T2) and times out its request (Timer F,
64*T1)."""

from __future__ import annotations

import itertools

import pytest

from meshcomm.config import InvalidConfig, parse_config
from meshcomm.node.gateway.types import GatewayConfig
from meshcomm.runtime.app import gateway_config
from meshcomm.runtime.sipgw import SipSockets
from meshcomm.sip.message import SipRequest, SipResponse
from meshcomm.sip.timers import RFC3261_TIMERS, TimerConfig
from tests.node.gateway_net import Net
from tests.node.raw_sip import raw_register, raw_request, received

RAW_ALICE = ("127.0.0.1", 5080)
RAW_BOB = ("127.0.0.1", 5090)


def test_sip_section_timers_feed_the_gateway_config() -> None:
    cfg = parse_config({"sip": {"t1_s": 0.25, "t2_s": 2}})
    assert cfg.sip.timers == TimerConfig(t1_s=0.25, t2_s=2.0, t4_s=RFC3261_TIMERS.t4_s)
    sockets = SipSockets("127.0.0.1", 5062, 5062, lambda _d, _a: None, max_tcp_connections=4)
    assert gateway_config(cfg, sockets).timers == cfg.sip.timers
    # no [sip] timers: the RFC's own values, as the gateway had before
    default = gateway_config(parse_config({}), sockets)
    assert default.timers == RFC3261_TIMERS == GatewayConfig().timers
    assert (default.timers.t1_s, default.timers.t2_s) == (0.5, 4.0)
    assert default.timers.timer_f_s == 32.0 and default.timers.timer_c_s == 180.0


@pytest.mark.parametrize(("sip", "key"), [
    ({"t1_s": 0.0}, "sip.t1_s"),
    ({"t2_s": 500.0}, "sip.t2_s"),
    ({"t1_s": 2.0, "t2_s": 1.0}, "sip.t2_s"),       # T2 caps intervals that start at T1
])
def test_bad_sip_timers_name_their_key(sip: dict[str, float], key: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        parse_config({"sip": sip})
    assert key in str(info.value)


def _copies_to_bob(net: Net) -> int:
    return sum(1 for m in received(net, 0, RAW_BOB) if isinstance(m, SipRequest))


def _final_to_alice(net: Net) -> list[int]:
    return [m.status for m in received(net, 0, RAW_ALICE)
            if isinstance(m, SipResponse) and m.status >= 200]


@pytest.mark.parametrize("timers", [RFC3261_TIMERS, TimerConfig(t1_s=0.25, t2_s=1.0)])
def test_silent_client_is_retransmitted_to_at_t1_doubling_then_408_after_timer_f(
        timers: TimerConfig) -> None:
    net = Net(1, config=GatewayConfig(timers=timers))
    raw_register(net, 0, RAW_BOB, "bob")           # a client that never answers
    start = net.now
    net.stations[0].sip.receive_sip(raw_request(
        "OPTIONS", "bob", RAW_ALICE, from_user="alice", branch="opt1",
        call_id="timers-1@alice"), RAW_ALICE, net.now)
    sent_at: list[float] = []
    while not _final_to_alice(net):
        net.step(start + 2 * timers.timer_f_s)
        while len(sent_at) < _copies_to_bob(net):
            sent_at.append(net.now - start)
    assert _final_to_alice(net) == [408]
    took = net.now - start
    assert timers.timer_f_s <= took <= timers.timer_f_s + 0.1
    intervals = [b - a for a, b in itertools.pairwise(sent_at)]
    expected = [timers.t1_s]
    while len(expected) < len(intervals):
        expected.append(min(2 * expected[-1], timers.t2_s))
    assert intervals == pytest.approx(expected, abs=0.06)
    assert max(intervals) == pytest.approx(timers.t2_s, abs=0.06)
