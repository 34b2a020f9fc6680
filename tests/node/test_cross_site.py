"""Cross-site routing through uplinked relays (issue 10 items 3 and 4, sans-IO): two
islands, each a chain whose end node is a relay with an uplink (DHT bridge on a shared
in-memory DHT, uplink mesh); a node two radio hops from its relay sends to a node two hops
from the far relay. The AoR is resolved on demand (RESOLVE to the island relay, a DHT get
there), the MESSAGE crosses as a tunnel item signed by its origin, its 200 OK returns the
same way, and the remote binding is never flooded into the local gossip."""

from __future__ import annotations

from meshcomm.node.gateway.counters import GatewayCounter
from meshcomm.node.gateway.types import SendStatus
from meshcomm.node.kinds import AppKind
from meshcomm.node.tunnel import RELAY_ITEMS_BURST, TunnelCounter
from meshcomm.node.tunnel_wire import encode_tunnel_out, seal_item
from meshcomm.overlay.counters import OverlayCounter
from meshcomm.overlay.forwarding import UnicastReceived
from tests.node.cross_site_net import CrossSiteNet

ISLANDS = {"A": ["a0", "a1", "a2"], "B": ["b2", "b1", "b0"]}


def _net(**kw: float) -> CrossSiteNet:
    net = CrossSiteNet(ISLANDS, {"a2", "b2"}, **kw)
    net.run(15.0)                       # islands converge, uplinks up, bindings published
    return net


def test_a_message_crosses_to_another_island_exactly_once_and_is_answered() -> None:
    net = _net()
    send_id = net.send("a0", "b0", "hello from A")
    net.run(net.now + 10.0)
    a0, b0 = net.stations["a0"], net.stations["b0"]
    assert [e.body for e in b0.inbox][:1] == [b"hello from A"]
    assert a0.core.gateway is not None
    assert a0.core.gateway.outbox[send_id].status is SendStatus.DELIVERED
    # Not flooded: the other island's bindings are not in A's location tables.
    for name in ("a0", "a1", "a2"):
        assert not net.stations[name].core.node.table.lookup(b0.aor)
    assert a0.core.tunnel is not None and b0.core.tunnel is not None
    assert a0.core.tunnel.counters[TunnelCounter.RESOLVES_ANSWERED] == 1
    assert b0.core.tunnel.counters[TunnelCounter.DELIVERED] >= 1
    # A second request for the AoR goes at once: the relay's answer is reused.
    again = net.send("a0", "b0", "again")
    net.run(net.now + 5.0)
    assert a0.core.gateway.outbox[again].status is SendStatus.DELIVERED
    assert a0.core.tunnel.counters[TunnelCounter.RESOLVES_ANSWERED] == 1
    assert a0.core.tunnel.counters[TunnelCounter.RESOLVES_CACHED] == 1
    # ... and back: b0 answers a0 (its route back was learned from the item).
    back = net.send("b0", "a0", "hello from B")
    net.run(net.now + 10.0)
    assert [e.body for e in a0.inbox] == [b"hello from B"]
    assert b0.core.gateway is not None
    assert b0.core.gateway.outbox[back].status is SendStatus.DELIVERED


def test_many_messages_across_lossy_radios_each_delivered_once() -> None:
    net = _net(loss=0.1, seed=3)
    for i in range(20):
        net.send("a0", "b0", f"m{i}")
    net.run(net.now + 60.0)
    bodies = [e.body for e in net.stations["b0"].inbox]
    assert sorted(bodies) == sorted(f"m{i}".encode() for i in range(20))


def test_many_messages_at_once_to_one_far_aor_ask_the_relay_once() -> None:
    """Twenty MESSAGEs to one far AoR at once are one question to the island relay (the
    others wait for its answer), so the relay's per-node question limit refuses none of
    them as busy (it did: 3 of 20 answered 480 on a lossy seed)."""
    net = _net()
    for i in range(20):
        net.send("a0", "b0", f"m{i}")
    net.run(net.now + 30.0)
    a0 = net.stations["a0"].core
    assert a0.tunnel is not None and a0.gateway is not None
    assert sorted(e.body for e in net.stations["b0"].inbox) == sorted(
        f"m{i}".encode() for i in range(20))
    assert a0.tunnel.counters[TunnelCounter.RESOLVES_JOINED] == 19
    assert a0.tunnel.counters[TunnelCounter.RESOLVES_ANSWERED] == 1
    relays = [s.core.tunnel for s in net.stations.values() if s.core.tunnel is not None]
    assert sum(t.counters[TunnelCounter.QUESTIONS_REFUSED] for t in relays) == 0
    assert all(out.status is SendStatus.DELIVERED for out in a0.gateway.outbox.values())


def test_an_unknown_aor_is_404_after_asking_the_dht() -> None:
    net = _net()
    a0 = net.stations["a0"]
    send_id = a0.pump.command(net.now, lambda: a0.core.send_message(
        "sip:nobody@fire.example", "?", net.now))
    net.run(net.now + 30.0)
    assert a0.core.gateway is not None
    result = a0.core.gateway.outbox[send_id]
    assert (result.status, result.code) == (SendStatus.FAILED, 404)


def test_hostile_tunnel_input_is_dropped_counted_and_honest_traffic_still_crosses() -> None:
    from meshcomm.node.tunnel_wire import encode_resolve

    net = _net()
    a1, a2, b0 = net.stations["a1"], net.stations["a2"], net.stations["b0"]
    b2 = net.stations["b2"]
    bad = a1.core.node

    def flood() -> None:
        now = net.now
        forged = seal_item(bad.identity, "incident-x", b0.core.node_id, AppKind.SIP, 1,
                           b"MESSAGE sip:b0@fire.example SIP/2.0\r\n\r\n")
        for blob in (b"\x00garbage", b"", encode_resolve(1, "sip:a@b")):
            bad.send_unicast(a2.core.node_id, AppKind.TUNNEL_OUT, blob, now)
        for i in range(40):              # over the per-node question limit
            bad.send_unicast(a2.core.node_id, AppKind.RESOLVE,
                             encode_resolve(i, f"sip:x{i}@fire.example"), now)
        for _ in range(600):             # over the relay's per-origin budget
            bad.send_unicast(a2.core.node_id, AppKind.TUNNEL_OUT,
                             encode_tunnel_out((b2.core.node_id,), forged), now)
    a1.pump.command(net.now, flood)
    net.run(net.now + 30.0)
    relay = a2.core.tunnel
    assert relay is not None
    # The flood was cut down on its way (the overlay's per-neighbour limit, then the
    # tunnel's per-origin budget): far fewer than sent went over the uplink.
    assert relay.counters[TunnelCounter.RELAYED_OUT] <= RELAY_ITEMS_BURST
    assert (relay.counters[TunnelCounter.DROP_RATE]
            + a2.core.node.counters[OverlayCounter.DROP_RATE_LIMITED]) > 0
    assert relay.counters[TunnelCounter.QUESTIONS_REFUSED] > 0
    assert relay.counters[TunnelCounter.DROP_MALFORMED] >= 3
    far = b0.core.tunnel
    assert far is not None
    # The forged copies carried one msg_no: delivered at most once, the rest duplicates.
    assert far.counters[TunnelCounter.DELIVERED] <= 1
    send_id = net.send("a0", "b0", "still works")
    net.run(net.now + 20.0)
    assert b"still works" in [e.body for e in b0.inbox]
    a0 = net.stations["a0"]
    assert a0.core.gateway is not None
    assert a0.core.gateway.outbox[send_id].status is SendStatus.DELIVERED


def test_an_item_whose_signature_fails_is_dropped_at_the_destination() -> None:
    from meshcomm.node.tunnel_wire import SignedItem, encode_tunnel_in

    net = _net()
    b1, b0 = net.stations["b1"], net.stations["b0"]
    good = seal_item(b1.core.node.identity, "incident-x", b0.core.node_id, AppKind.SIP, 5,
                     b"x")
    forged = SignedItem(good.origin_key, good.dst, good.kind, good.msg_no, b"y",
                        good.signature)
    other_incident = seal_item(b1.core.node.identity, "elsewhere", b0.core.node_id,
                               AppKind.SIP, 6, b"x")
    relay = net.stations["b2"].core.node_id

    def send() -> None:
        for item in (forged, other_incident):
            b1.core.node.send_unicast(b0.core.node_id, AppKind.TUNNEL_IN,
                                      encode_tunnel_in(relay, item), net.now)
    b1.pump.command(net.now, send)
    net.run(net.now + 5.0)
    assert b0.core.tunnel is not None
    assert b0.core.tunnel.counters[TunnelCounter.DROP_SIGNATURE] == 2
    assert b0.core.tunnel.counters[TunnelCounter.DELIVERED] == 0


def test_a_relay_passes_on_at_most_its_budget_per_origin() -> None:
    net = _net()
    a1, a2, b2 = net.stations["a1"], net.stations["a2"], net.stations["b2"]
    relay = a2.core.tunnel
    assert relay is not None
    item = seal_item(a1.core.node.identity, "incident-x", b2.core.node_id, AppKind.SIP, 1,
                     b"x")
    body = encode_tunnel_out((b2.core.node_id,), item)
    event = UnicastReceived(a1.core.node_id, a1.core.node.identity.public_key,
                            AppKind.TUNNEL_OUT, body, 1, 1)
    before = relay.counters[TunnelCounter.RELAYED_OUT]
    for _ in range(1000):
        relay.on_unicast(event, False, net.now)
    assert relay.counters[TunnelCounter.RELAYED_OUT] - before == RELAY_ITEMS_BURST
    assert relay.counters[TunnelCounter.DROP_RATE] == 1000 - RELAY_ITEMS_BURST


def test_an_aor_nobody_knows_goes_to_the_upstream_proxy_of_the_islands_relay() -> None:
    proxy = ("192.0.2.50", 5060)
    net = CrossSiteNet(ISLANDS, {"a2", "b2"}, upstream={"a2": proxy})
    net.run(15.0)
    a0, a2 = net.stations["a0"], net.stations["a2"]
    send_id = a0.pump.command(net.now, lambda: a0.core.send_message(
        "sip:deskphone@pbx.example", "to the desk", net.now))
    net.run(net.now + 20.0)
    to_proxy = [d for d in a2.edge.take_local() if d.dest == proxy]
    assert to_proxy and to_proxy[0].data.startswith(b"MESSAGE sip:deskphone@pbx.example ")
    assert a2.core.gateway is not None
    assert a2.core.gateway.counters[GatewayCounter.TO_UPSTREAM] == 1
    # Nobody answers upstream: the sender hears a failure, the island keeps working.
    assert a0.core.gateway is not None
    assert a0.core.gateway.outbox[send_id].status is SendStatus.FAILED
    other = net.send("a0", "b0", "still across")
    net.run(net.now + 10.0)
    assert b"still across" in [e.body for e in net.stations["b0"].inbox]
    assert a0.core.gateway.outbox[other].status is SendStatus.DELIVERED


def test_messages_sent_while_the_uplink_is_cut_are_held_and_delivered_once_after() -> None:
    net = CrossSiteNet(ISLANDS, {"a2", "b2"}, store_forward=True)
    net.run(15.0)
    first = net.send("a0", "b0", "before")            # resolves; route known
    net.run(net.now + 5.0)
    a0, b0 = net.stations["a0"], net.stations["b0"]
    assert a0.core.gateway is not None
    assert a0.core.gateway.outbox[first].status is SendStatus.DELIVERED
    net.cut_wan(True)
    net.run(net.now + 10.0)                           # the relays' uplinks go down
    sends = [net.send("a0", "b0", f"held {i}") for i in range(20)]
    net.run(net.now + 20.0)
    outbox = a0.core.gateway.outbox
    assert {outbox[s].status for s in sends} == {SendStatus.HELD}, [
        (outbox[s].status, outbox[s].code) for s in sends]
    assert [e.body for e in b0.inbox] == [b"before"]
    restored_at = net.now
    net.cut_wan(False)
    net.run(net.now + 40.0)
    bodies = [e.body for e in b0.inbox]
    assert sorted(bodies) == sorted([b"before"] + [f"held {i}".encode() for i in range(20)])
    last = max(e.received_at for e in b0.inbox)
    print(f"held messages delivered {last - restored_at:.1f} s after the uplink returned")
    # The island relay held custody copies and tried them the moment its uplink was up
    # again (its stable period here: 1 s).
    assert last - restored_at <= 5.0


def test_an_island_with_two_uplinked_relays_keeps_delivering_when_one_dies() -> None:
    islands = {"A": ["a0", "a1", "a2"], "A2": ["a3"], "B": ["b2", "b1", "b0"]}
    net = CrossSiteNet(islands, {"a2", "a3", "b2"}, store_forward=True,
                       extra_links=(("a1", "a3"),))
    net.run(15.0)
    a0, b0 = net.stations["a0"], net.stations["b0"]
    assert a0.core.tunnel is not None
    assert len(a0.core.tunnel.island_relays(net.now)) == 2
    first = net.send("a0", "b0", "via either")
    net.run(net.now + 5.0)
    assert a0.core.gateway is not None
    assert a0.core.gateway.outbox[first].status is SendStatus.DELIVERED
    used = a0.core.tunnel.island_relays(net.now)[0]
    dead = next(st for st in net.stations.values() if st.core.node_id == used)
    dead.up = False                                   # the relay a0 used dies
    net.model.kill(dead.name)
    sends = [net.send("a0", "b0", f"after {i}") for i in range(10)]
    net.run(net.now + 90.0)
    bodies = [e.body for e in b0.inbox]
    assert sorted(bodies) == sorted([b"via either"] + [f"after {i}".encode()
                                                        for i in range(10)])
    outbox = a0.core.gateway.outbox
    assert {outbox[s].status for s in sends} <= {SendStatus.DELIVERED, SendStatus.HELD}


def test_when_the_far_islands_relay_that_carried_the_traffic_dies_the_other_takes_over(
) -> None:
    """The relay of the *destination's* island dies: b0 learned its way to a0 from the
    items that came through that relay. Its other relay is still known (from the
    resolution) and is used as soon as the uplink mesh no longer hears the dead one, at
    b0's island relay if b0's own list is stale (the relay's own route)."""
    islands = {"A": ["a0", "a1", "a2"], "A2": ["a3"], "B": ["b2", "b1", "b0"]}
    net = CrossSiteNet(islands, {"a2", "a3", "b2"}, store_forward=True,
                       extra_links=(("a1", "a3"),))
    net.run(15.0)
    a0, b0, b2 = net.stations["a0"], net.stations["b0"], net.stations["b2"]
    assert a0.core.gateway is not None and b0.core.gateway is not None
    assert b0.core.tunnel is not None and b2.core.tunnel is not None
    for sender, receiver in (("b0", "a0"), ("a0", "b0"), ("b0", "a0")):
        sent = net.send(sender, receiver, f"{sender} first")
        net.run(net.now + 5.0)
        assert net.stations[sender].core.gateway.outbox[sent].status \
            is SendStatus.DELIVERED   # type: ignore[union-attr]
    route = b0.core.tunnel.route(a0.core.node_id, net.now)
    assert route is not None and len(route.far_relays) == 2, route
    used = route.far_relays[0]                # the relay the last item from a0 came through
    dead = next(st for st in net.stations.values() if st.core.node_id == used)
    dead.up = False
    net.model.kill(dead.name)
    killed_at = net.now
    sends = [net.send("b0", "a0", f"after {i}") for i in range(10)]
    net.run(net.now + 20.0)
    got = {e.body: e.received_at for e in a0.inbox}
    late = {text: round(at - killed_at, 1) for text, at in got.items() if b"after" in text}
    print(f"\nrelay {dead.name} killed: b0's MESSAGEs to a0 arrived after (s) "
          f"{sorted(late.values())}; b2 sent {b2.core.tunnel.counters[TunnelCounter.OWN_FAR_RELAY]}"
          " items to a far relay of its own route")
    assert sorted(late) == sorted(f"after {i}".encode() for i in range(10)), late
    assert max(late.values()) < 15.0, late
    assert [e.body for e in a0.inbox].count(b"after 0") == 1
    outbox = b0.core.gateway.outbox
    assert {outbox[s].status for s in sends} <= {SendStatus.DELIVERED, SendStatus.HELD}


def test_an_island_relay_passes_over_a_dead_far_relay_a_sender_still_names() -> None:
    """A sender's far relays may be stale: the island relay sends to the first one its
    uplink mesh reaches through a live neighbour, and when the sender names only dead
    ones, to a live far relay of its own route to the destination."""
    islands = {"A": ["a0", "a1", "a2"], "A2": ["a3"], "B": ["b2", "b1", "b0"]}
    net = CrossSiteNet(islands, {"a2", "a3", "b2"}, extra_links=(("a1", "a3"),))
    net.run(15.0)
    a0, b1, b2 = net.stations["a0"], net.stations["b1"], net.stations["b2"]
    sent = net.send("b2", "a0", "the relay resolves a0 itself")
    net.run(net.now + 5.0)
    assert b2.core.gateway is not None and b2.core.tunnel is not None
    assert b2.core.gateway.outbox[sent].status is SendStatus.DELIVERED
    own = b2.core.tunnel.route(a0.core.node_id, net.now)
    assert own is not None and len(own.far_relays) == 2, own
    dead_st, live_st = net.stations["a3"], net.stations["a2"]
    dead, live = dead_st.core.node_id, live_st.core.node_id
    dead_st.up = False
    net.model.kill(dead_st.name)
    net.run(net.now + 6.0)              # the uplink mesh's neighbour timeout (3.5 s)
    relay, far = b2.core.tunnel, a0.core.tunnel
    assert far is not None
    for msg_no, named in enumerate(((dead, live), (dead,)), start=100):
        item = seal_item(b1.core.node.identity, "incident-x", a0.core.node_id, AppKind.SIP,
                         msg_no, b"x")
        before = far.counters[TunnelCounter.DELIVERED]
        b1.pump.command(net.now, lambda n=named, i=item: b1.core.node.send_unicast(  # type: ignore[misc]
            b2.core.node_id, AppKind.TUNNEL_OUT, encode_tunnel_out(n, i), net.now))
        net.run(net.now + 3.0)
        assert far.counters[TunnelCounter.DELIVERED] == before + 1, (named, dict(far.counters))
    assert relay.counters[TunnelCounter.OWN_FAR_RELAY] == 1


def test_a_far_relay_reached_through_another_member_is_passed_over_once_it_is_gone() -> None:
    """b2 and a3 do not hear each other on the WAN (NATs): the uplink mesh routes b2's
    items for a3 through a2, which acknowledges each hop and cannot go further once a3
    died. b2 sees it in a2's HELLOs (a3 no longer listed) and sends through a2 itself."""
    islands = {"A": ["a0", "a1", "a2"], "A2": ["a3"], "B": ["b2", "b1", "b0"]}
    net = CrossSiteNet(islands, {"a2", "a3", "b2"}, extra_links=(("a1", "a3"),),
                       wan_blocked=(("a3", "b2"),))
    net.run(15.0)
    a0, b1, b2 = net.stations["a0"], net.stations["b1"], net.stations["b2"]
    dead_st, live_st = net.stations["a3"], net.stations["a2"]
    dead, live = dead_st.core.node_id, live_st.core.node_id
    assert b2.core.uplink is not None
    mesh = b2.core.uplink.overlay
    route = mesh.routes.get(dead, net.now)
    assert route is not None and route.hops == 2 and dead not in mesh.neighbours.by_id
    far = a0.core.tunnel
    assert far is not None
    delivered = far.counters[TunnelCounter.DELIVERED]
    for msg_no, killed in ((200, False), (201, True)):
        if killed:
            dead_st.up = False
            net.model.kill(dead_st.name)
            net.run(net.now + 8.0)        # a2's neighbour timeout, then its next HELLO
            gone = mesh.routes.get(dead, net.now)
            assert gone is not None and mesh.lost_beyond(gone)
        item = seal_item(b1.core.node.identity, "incident-x", a0.core.node_id, AppKind.SIP,
                         msg_no, b"x")
        b1.pump.command(net.now, lambda i=item: b1.core.node.send_unicast(  # type: ignore[misc]
            b2.core.node_id, AppKind.TUNNEL_OUT, encode_tunnel_out((dead, live), i),
            net.now))
        net.run(net.now + 3.0)
        delivered += 1
        assert far.counters[TunnelCounter.DELIVERED] == delivered, (killed, dict(far.counters))


def test_a_members_uplink_addresses_reach_the_other_relays_edges_as_peers() -> None:
    from meshcomm.node.tunnel import UplinkPeers

    net = _net()
    a2, b2 = net.stations["a2"], net.stations["b2"]
    assert b2.core.uplink is not None
    aor = f"sip:{b2.core.node_id.hex()[:16]}@uplink.invalid"
    mapped = "198.51.100.7:40000"          # what a reachable member saw b2's NAT map to
    b2.pump.command(net.now, lambda: b2.core.uplink.register(  # type: ignore[union-attr]
        aor, (mapped, "not an address"), net.now))
    net.run(net.now + 5.0)
    peers = [e for e in a2.edge.events if isinstance(e, UplinkPeers)]
    assert UplinkPeers((mapped,)) in peers
    assert a2.core.tunnel is not None
    assert a2.core.tunnel.counters[TunnelCounter.BAD_UPLINK_CONTACT] >= 1


def test_with_the_dht_unreachable_an_unknown_aor_still_goes_upstream() -> None:
    proxy = ("192.0.2.50", 5060)
    net = CrossSiteNet(ISLANDS, {"a2", "b2"}, upstream={"a2": proxy})
    net.run(15.0)
    net.cut_wan(True)                          # the DHT is gone; the PBX may not be
    net.run(net.now + 10.0)
    a0, a2 = net.stations["a0"], net.stations["a2"]
    assert a2.core.dht is not None and a2.core.dht.uplink_state.value != "up"
    a0.pump.command(net.now, lambda: a0.core.send_message(
        "sip:deskphone@pbx.example", "to the desk", net.now))
    net.run(net.now + 5.0)
    assert [d for d in a2.edge.take_local() if d.dest == proxy]


def test_an_idle_watch_ends_at_its_deadline_whatever_the_rounding() -> None:
    """last + 60 == now while now - last < 60 in floating point: the watch must end, not be
    rescheduled at ``now`` forever (the simulator spun on this)."""
    net = _net()
    a2, b0 = net.stations["a2"], net.stations["b0"]
    tunnel = a2.core.tunnel
    assert tunnel is not None and a2.core.dht is not None
    last, now = 43.27670679050534, 103.27670679050533
    assert now - last < 60.0 and last + 60.0 == now
    tunnel._aor_of[b0.core.node_id] = b0.aor                      # resolved earlier
    tunnel._in_use(b0.core.node_id, last)
    assert a2.core.dht.status().watches == 1
    assert tunnel.next_timer() == now
    tunnel.on_timer(now)
    assert a2.core.dht.status().watches == 0
    assert tunnel.next_timer() is None
