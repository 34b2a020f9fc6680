"""Cross-site routing through uplinked relays (issue 10 items 3 and 4, sans-IO): two
islands, each a chain whose end node is a relay with an uplink (DHT bridge on a shared
in-memory DHT, uplink mesh); a node two radio hops from its relay sends to a node two hops
from the far relay. The AoR is resolved on demand (RESOLVE to the island relay, a DHT get
there), the MESSAGE crosses as a tunnel item signed by its origin, its 200 OK returns the
same way, and the remote binding is never flooded into the local gossip."""

from __future__ import annotations

from meshcomm.node.gateway.types import SendStatus
from meshcomm.node.tunnel import TunnelCounter
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
    assert [e.body for e in b0.inbox] == [b"hello from A"]
    assert a0.core.gateway is not None
    assert a0.core.gateway.outbox[send_id].status is SendStatus.DELIVERED
    # Not flooded: the other island's bindings are not in A's location tables.
    for name in ("a0", "a1", "a2"):
        assert not net.stations[name].core.node.table.lookup(b0.aor)
    assert a0.core.tunnel is not None and b0.core.tunnel is not None
    assert a0.core.tunnel.counters[TunnelCounter.RESOLVES_ANSWERED] == 1
    assert b0.core.tunnel.counters[TunnelCounter.DELIVERED] >= 1
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


def test_an_unknown_aor_is_404_after_asking_the_dht() -> None:
    net = _net()
    a0 = net.stations["a0"]
    send_id = a0.pump.command(net.now, lambda: a0.core.send_message(
        "sip:nobody@fire.example", "?", net.now))
    net.run(net.now + 30.0)
    assert a0.core.gateway is not None
    result = a0.core.gateway.outbox[send_id]
    assert (result.status, result.code) == (SendStatus.FAILED, 404)
