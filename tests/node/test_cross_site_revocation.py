"""A revoked device is unreachable across sites (issue 12.4, sans-IO, whole node cores):
two islands joined by uplinked relays (DHT bridges on a shared in-memory DHT, uplink
meshes sharing their island node's trust store, as the runtime builds them). A route to
b0 is in use; then a root agency key revokes b0 at a node of the *other* island. The
record crosses the uplink; the watching relay forgets b0's remote binding, the origin's
remote route goes, a new MESSAGE to b0 is refused after the DHT's copy is dropped, the
revoked node's own gateway refuses its client 403, and tunnel items from, to or via b0
are dropped at relays and at the destination."""

from __future__ import annotations

from meshcomm.dht.counters import DhtCounter
from meshcomm.dht.remote import RemoteState
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import RemoteBindingChanged
from meshcomm.location.table import TrustMode, TrustPolicy
from meshcomm.node.gateway.revoked import RevokedCounter
from meshcomm.node.gateway.types import SendStatus
from meshcomm.node.kinds import AppKind
from meshcomm.node.tunnel import TUNNEL_IN_STREAM, TunnelCounter
from meshcomm.node.tunnel_wire import (
    MediaItem,
    encode_tunnel_in,
    encode_tunnel_out,
    encode_tunnel_wan,
    seal_item,
)
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import TrustKind, make_trust_record
from meshcomm.types import NodeId
from tests.node.cross_site_net import INCIDENT, WALL, CrossSiteNet, Station

ROOT = Identity(b"R" * 32)
ISLANDS = {"A": ["a0", "a1", "a2"], "B": ["b2", "b1", "b0"]}


def _net() -> CrossSiteNet:
    net = CrossSiteNet(ISLANDS, {"a2", "b2"},
                       trust=TrustPolicy(TrustMode.OPEN, frozenset({ROOT.public_key})))
    net.run(15.0)
    return net


def _revoke(net: CrossSiteNet, at: str, victim: Station) -> None:
    record = make_trust_record(ROOT, incident=INCIDENT, kind=TrustKind.REVOKE_DEVICE,
                               subject=victim.core.node.identity.public_key,
                               issued_at=int(WALL + net.now), note="handset lost")
    st = net.stations[at]
    assert st.pump.command(net.now, lambda: st.core.node.overlay.trust.originate(
        record, net.now)) is None


def _tunnel_drops(st: Station) -> int:
    assert st.core.tunnel is not None
    return st.core.tunnel.counters[TunnelCounter.DROP_REVOKED]


def test_a_device_revoked_while_its_route_is_in_use_becomes_unreachable() -> None:
    net = _net()
    a0, a2, b0 = net.stations["a0"], net.stations["a2"], net.stations["b0"]
    first = net.send("a0", "b0", "before")
    net.run(net.now + 10.0)
    assert a0.core.gateway is not None and b0.core.gateway is not None
    assert a0.core.gateway.outbox[first].status is SendStatus.DELIVERED
    assert a0.core.tunnel is not None and a2.core.dht is not None
    assert a0.core.tunnel.route(b0.core.node_id, net.now) is not None    # in use
    assert b0.core.node_id in a0.core.tunnel.remote_nodes(net.now)
    assert a2.core.dht.remote.view(b0.aor)                                # known at the relay

    _revoke(net, "a0", b0)
    net.run(net.now + 5.0)
    # The record crossed to the other island (the uplink mesh shares the store).
    for st in net.stations.values():
        assert st.core.node.overlay.trust.node_revoked(b0.core.node_id), st.name
    # The watching relay forgot the remote binding and journaled why; the origin's
    # remote route is gone.
    assert a2.core.dht.remote.view(b0.aor) == ()
    changes = [e.payload for e in a2.edge.journal if isinstance(e, JournalRecord)
               and isinstance(e.payload, RemoteBindingChanged)]
    assert changes and changes[-1].state == RemoteState.REVOKED
    assert b0.core.node_id not in a0.core.tunnel.remote_nodes(net.now)  # no journal pulls
    assert a0.core.tunnel.route(b0.core.node_id, net.now) is None
    # A new MESSAGE: the DHT's copy of b0's record (its relay no longer refreshes it, but
    # it has not lapsed) is dropped at a2, so a0's gateway answers 404.
    inbox = len(b0.inbox)
    after = net.send("a0", "b0", "after")
    net.run(net.now + 20.0)
    assert a0.core.gateway.outbox[after].status is SendStatus.FAILED
    assert len(b0.inbox) == inbox
    assert a2.core.dht.counters[DhtCounter.DROP_REVOKED] >= 1
    # The revoked node's own gateway refuses its client (issue 12.4, gateway.revoked).
    from_b0 = net.send("b0", "a0", "from the lost handset")
    net.run(net.now + 5.0)
    result = b0.core.gateway.outbox[from_b0]
    assert (result.status, result.code) == (SendStatus.FAILED, 403)
    assert b0.core.gateway.counters[RevokedCounter.REFUSED] == 1
    assert b0.core.node.overlay.trust.status()["this_node_revoked"] == "revoked"
    assert a0.core.node.overlay.trust.status()["this_node_revoked"] == ""


def test_tunnel_items_from_to_or_via_a_revoked_node_are_dropped() -> None:
    """What an overlay cannot see: items inside a relay's envelopes (a relay of a site the
    revocation has not reached yet, or a dishonest one)."""
    net = _net()
    a0, a1, a2 = net.stations["a0"], net.stations["a1"], net.stations["a2"]
    b0, b2 = net.stations["b0"], net.stations["b2"]
    _revoke(net, "a0", b0)
    net.run(net.now + 5.0)
    lost = b0.core.node.identity
    from_lost = seal_item(lost, INCIDENT, a0.core.node_id, AppKind.SIP, 7,
                          b"MESSAGE sip:a0@fire.example SIP/2.0\r\n\r\n")
    to_lost = seal_item(a1.core.node.identity, INCIDENT, b0.core.node_id, AppKind.SIP, 8,
                        b"MESSAGE sip:b0@fire.example SIP/2.0\r\n\r\n")
    media = MediaItem(NodeId(b0.core.node_id), NodeId(a0.core.node_id), b"s" * 8, b"rtp")
    honest = seal_item(a1.core.node.identity, INCIDENT, a0.core.node_id, AppKind.SIP, 9,
                       b"MESSAGE sip:a0@fire.example SIP/2.0\r\n\r\n")
    before = {st.name: _tunnel_drops(st) for st in (a0, a2)}
    assert a2.core.tunnel is not None
    # At the relay: over the uplink from b2, an item from b0; from a1, one to b0.
    a2.pump.command(net.now, lambda: a2.core.tunnel.on_unicast(  # type: ignore[union-attr]
        UnicastReceived(NodeId(b2.core.node_id), b"", AppKind.TUNNEL_WAN,
                        encode_tunnel_wan(from_lost), 1, 0), True, net.now))

    def island_sends() -> None:
        node, now = a1.core.node, net.now
        node.send_unicast(a2.core.node_id, AppKind.TUNNEL_OUT,
                          encode_tunnel_out((b2.core.node_id,), to_lost), now)
        # At the destination: from b0, an item and a media item; via b0, an honest one.
        for far, item in ((b2.core.node_id, from_lost), (b2.core.node_id, media),
                          (b0.core.node_id, honest)):
            node.send_unicast(a0.core.node_id, AppKind.TUNNEL_IN, encode_tunnel_in(far, item),
                              now)
        node.send_media(a0.core.node_id, TUNNEL_IN_STREAM,
                        encode_tunnel_in(b2.core.node_id, media), now)
    a1.pump.command(net.now, island_sends)
    net.run(net.now + 5.0)
    assert _tunnel_drops(a2) - before["a2"] == 2
    assert _tunnel_drops(a0) - before["a0"] == 4
    assert a0.core.tunnel is not None
    assert a0.core.tunnel.counters[TunnelCounter.DELIVERED] == 0
    assert a0.inbox == []
    assert a0.core.tunnel.route(b0.core.node_id, net.now) is None      # nothing learned
    # Honest traffic still crosses.
    send_id = net.send("a0", "b1", "still works")
    net.run(net.now + 20.0)
    assert a0.core.gateway is not None
    assert a0.core.gateway.outbox[send_id].status is SendStatus.DELIVERED
