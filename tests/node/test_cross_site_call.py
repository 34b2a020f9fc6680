"""A call between stock UAs in two islands (issue 10): the INVITE is resolved through the
caller's island relay and the DHT, crosses the uplink as a tunnel item, the answer comes
back the same way, synthetic RTP crosses both ways as media items for the life of the call
(10 s each way, nothing lost or reordered on these lossless links) while the caller's
relay watches the callee's AoR in the DHT, and BYE ends it on both sides, releasing the
ports (and the idle watch)."""

from __future__ import annotations

from meshcomm.media.relay import MediaConfig
from meshcomm.node.tunnel import TunnelCounter
from meshcomm.sip.sdp import make_offer
from meshcomm.sip.ua_events import CallEnded, CallEstablished, IncomingCall
from tests.node.cross_site_gateway_net import CrossSiteGatewayNet
from tests.node.gateway_net import DOMAIN, of_kind, registered
from tests.node.test_gateway_media import (
    ALICE_PORT,
    ALICE_RTP,
    BOB_PORT,
    BOB_RTP,
    _answer,
    _only_call,
    exchange_rtp,
)


def test_a_call_across_islands_carries_rtp_both_ways_and_ends_with_bye() -> None:
    net = CrossSiteGatewayNet(6, media=MediaConfig())
    net.run_for(10.0)                          # islands, uplink mesh and DHT settle
    alice = registered(net, 0, ALICE_PORT, "alice")
    last = len(net.stations) - 1
    registered(net, last, BOB_PORT, "bob")
    bob = net.stations[last].uas[("127.0.0.1", BOB_PORT)]
    net.run_for(5.0)                           # bob's binding published by his relay
    assert not net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")
    call = alice.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1",
                                                       rtp_port=ALICE_RTP, session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(last, BOB_PORT), IncomingCall)))
    _answer(bob, of_kind(net.events(last, BOB_PORT), IncomingCall)[0], BOB_RTP)
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallEstablished)))
    call_id = _only_call(net, 0)
    assert _only_call(net, last) == call_id
    sent_a, sent_b = exchange_rtp(net, call_id, 0, last)
    assert [p.data for p in net.stations[last].to_clients] == sent_a
    assert [p.data for p in net.stations[0].to_clients] == sent_b
    tunnel = net.stations[0].core.tunnel
    assert tunnel is not None and tunnel.counters[TunnelCounter.SENT_MEDIA] == 500
    # While the call's items flow through them, the relays watch the far AoR (a DHT
    # listen): the remote route follows its relays mid-call.
    near = net.stations[net.relays[0]].core.dht
    assert near is not None and near.status().watches == 1
    alice.bye(call)
    net.run_until(lambda: bool(of_kind(net.events(last, BOB_PORT), CallEnded))
                  and bool(of_kind(net.events(0, ALICE_PORT), CallEnded)))
    for index in (0, last):
        relay = net.stations[index].relay
        assert relay is not None and not relay.sessions
    net.run_for(70.0)                          # idle: the watch is dropped
    assert near.status().watches == 0


def test_across_lossy_radios_a_calls_media_is_retransmitted_per_hop() -> None:
    """10% loss on every radio link (four radio hops end to end, the uplink lossless):
    media items travel as media frames with their per-hop retransmissions, so nearly all
    of a 10 s call's RTP arrives (without them about 0.9^4 = 66% did)."""
    net = CrossSiteGatewayNet(6, media=MediaConfig(), loss=0.1, seed=11)
    net.run_for(15.0)
    alice = registered(net, 0, ALICE_PORT, "alice")
    last = len(net.stations) - 1
    registered(net, last, BOB_PORT, "bob")
    bob = net.stations[last].uas[("127.0.0.1", BOB_PORT)]
    net.run_for(5.0)
    alice.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1", rtp_port=ALICE_RTP,
                                                session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(last, BOB_PORT), IncomingCall)),
                  timeout_s=60)
    _answer(bob, of_kind(net.events(last, BOB_PORT), IncomingCall)[0], BOB_RTP)
    net.run_until(lambda: bool(of_kind(net.events(0, ALICE_PORT), CallEstablished)),
                  timeout_s=60)
    call_id = _only_call(net, 0)
    sent_a, sent_b = exchange_rtp(net, call_id, 0, last)
    got_b = {p.data for p in net.stations[last].to_clients}
    got_a = {p.data for p in net.stations[0].to_clients}
    share_b = len(got_b & set(sent_a)) / len(sent_a)
    share_a = len(got_a & set(sent_b)) / len(sent_b)
    print(f"media across 4 lossy radio hops: {share_b:.3f} / {share_a:.3f} arrived")
    assert share_b >= 0.95 and share_a >= 0.95
