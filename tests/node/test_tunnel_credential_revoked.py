"""A device whose *credential* is revoked (its key is not) is cut off like a revoked key
(issue 12.4): its bindings are refused, and its tunnel items too (TrustSync.node_revoked
counts a device whose latest binding seen carries its own credential, revoked). Whole node
cores on two islands (CrossSiteNet): b0 registers with a credential, a0 talks to it, then a
root agency key revokes the credential at a0. Items from and to b0 are dropped at the
relays and the destination; honest items still cross; a new credential lets b0 back."""

from __future__ import annotations

from meshcomm.location.binding import make_binding
from meshcomm.node.gateway.types import SendStatus
from meshcomm.node.kinds import AppKind
from meshcomm.node.tunnel import TunnelCounter
from meshcomm.node.tunnel_wire import (
    encode_tunnel_in,
    encode_tunnel_out,
    encode_tunnel_wan,
    seal_item,
)
from meshcomm.overlay.forwarding import UnicastReceived
from meshcomm.overlay.trustsync import TrustSync
from meshcomm.security.credentials import Credential, issue_credential
from meshcomm.security.identity import Identity
from meshcomm.security.revocation import TrustKind, credential_id, make_trust_record
from meshcomm.types import NodeId
from tests.node.cross_site_net import INCIDENT, WALL, CrossSiteNet, Station
from tests.node.test_cross_site_revocation import ROOT, _net


def _credential(st: Station, net: CrossSiteNet) -> Credential:
    return issue_credential(ROOT, aor_pattern="sip:*@fire.example", role="medic",
                            device_key=st.core.node.identity.public_key,
                            issued_at=int(WALL + net.now) - 60,
                            expires_at=int(WALL + net.now) + 86400)


def _register_with(net: CrossSiteNet, st: Station, cred: Credential) -> None:
    st.core.node.credential = cred.to_bytes()
    st.pump.command(net.now, lambda: st.core.register(st.aor, (f"sip:{st.name}@mesh",),
                                                      net.now))


def _trust(st: Station) -> TrustSync:
    return st.core.node.overlay.trust


def _drops(st: Station) -> int:
    assert st.core.tunnel is not None
    return st.core.tunnel.counters[TunnelCounter.DROP_REVOKED]


def _net_with_credentialed_b0() -> tuple[CrossSiteNet, Credential]:
    net = _net()        # two islands, a root agency key (test_cross_site_revocation)
    b0 = net.stations["b0"]
    cred = _credential(b0, net)
    _register_with(net, b0, cred)
    net.run(net.now + 5.0)
    return net, cred


def test_a_revoked_credential_cuts_off_the_devices_tunnel_items() -> None:
    net, cred = _net_with_credentialed_b0()
    a0, a1, a2 = net.stations["a0"], net.stations["a1"], net.stations["a2"]
    b0, b1, b2 = net.stations["b0"], net.stations["b1"], net.stations["b2"]
    first = net.send("a0", "b0", "before")
    net.run(net.now + 10.0)
    assert a0.core.gateway is not None and a0.core.tunnel is not None
    assert a0.core.gateway.outbox[first].status is SendStatus.DELIVERED
    assert a0.core.tunnel.route(b0.core.node_id, net.now) is not None

    record = make_trust_record(ROOT, incident=INCIDENT, kind=TrustKind.REVOKE_CREDENTIAL,
                               subject=credential_id(cred), issued_at=int(WALL + net.now),
                               note="credential lost")
    assert a0.pump.command(net.now, lambda: _trust(a0).originate(record, net.now)) is None
    net.run(net.now + 5.0)
    lost_key = b0.core.node.identity.public_key
    # The key is not revoked; the device is, wherever its binding was seen: its island,
    # the relay that read it from the DHT, the node whose route was learned from it.
    assert not any(_trust(st).key_revoked(lost_key) for st in net.stations.values())
    assert not b1.core.node.table.lookup(b0.aor)
    assert a0.core.tunnel.route(b0.core.node_id, net.now) is None
    for st in (a0, a2, b1, b2):
        assert _trust(st).node_revoked(b0.core.node_id), st.name
    assert not _trust(a0).node_revoked(b1.core.node_id)

    from_lost = seal_item(b0.core.node.identity, INCIDENT, a0.core.node_id, AppKind.SIP, 7,
                          b"MESSAGE sip:a0@fire.example SIP/2.0\r\n\r\n")
    to_lost = seal_item(a1.core.node.identity, INCIDENT, b0.core.node_id, AppKind.SIP, 8,
                        b"MESSAGE sip:b0@fire.example SIP/2.0\r\n\r\n")
    honest = seal_item(b1.core.node.identity, INCIDENT, a0.core.node_id, AppKind.SIP, 9,
                       b"MESSAGE sip:a0@fire.example SIP/2.0\r\n\r\n")
    before = {st.name: _drops(st) for st in (a0, a2, b2)}
    assert a2.core.tunnel is not None and b2.core.tunnel is not None
    delivered = a0.core.tunnel.counters[TunnelCounter.DELIVERED]
    # Sent in the islands: at the far relay from b0 itself (TUNNEL_OUT), at the island
    # relay from a1 to b0, at the destination from b0 and an honest one (TUNNEL_IN).
    sends = ((b0, b2, AppKind.TUNNEL_OUT, encode_tunnel_out((a2.core.node_id,), from_lost)),
             (a1, a2, AppKind.TUNNEL_OUT, encode_tunnel_out((b2.core.node_id,), to_lost)),
             (a1, a0, AppKind.TUNNEL_IN, encode_tunnel_in(b2.core.node_id, from_lost)),
             (a1, a0, AppKind.TUNNEL_IN, encode_tunnel_in(b2.core.node_id, honest)))
    for src, dst, kind, body in sends:
        src.pump.command(net.now, lambda s=src, d=dst, k=kind, b=body: s.core.node.send_unicast(
            d.core.node_id, k, b, net.now))
    # Over the uplink at the island relay, from b2: an item from b0.
    wan = UnicastReceived(NodeId(b2.core.node_id), b"", AppKind.TUNNEL_WAN,
                          encode_tunnel_wan(from_lost), 1, 0)
    relay = a2.core.tunnel
    a2.pump.command(net.now, lambda: relay.on_unicast(wan, True, net.now))
    net.run(net.now + 5.0)
    assert _drops(b2) - before["b2"] == 1
    assert _drops(a2) - before["a2"] == 2
    assert _drops(a0) - before["a0"] == 1
    assert a0.core.tunnel.counters[TunnelCounter.DELIVERED] == delivered + 1   # the honest
    # A new MESSAGE finds nobody (a2 drops the DHT's copy of b0's binding): 404.
    inbox = len(b0.inbox)
    after = net.send("a0", "b0", "after")
    net.run(net.now + 20.0)
    assert a0.core.gateway.outbox[after].status is SendStatus.FAILED
    assert len(b0.inbox) == inbox

    # Enrolled again with a new credential: its island takes it back.
    _register_with(net, b0, _credential(b0, net))
    net.run(net.now + 5.0)
    assert b1.core.node.table.lookup(b0.aor)
    assert not _trust(b2).node_revoked(b0.core.node_id)
    assert not _trust(b1).node_revoked(b0.core.node_id)


def test_only_the_credentials_own_device_is_cut_off_and_older_bindings_change_nothing() -> None:
    """A revoked credential copied into another key's binding refuses that binding but does
    not mark the key (a flood of fresh keys cannot fill the table); a binding older than
    the verdict neither marks nor clears it."""
    net, cred = _net_with_credentialed_b0()
    a0, b0 = net.stations["a0"], net.stations["b0"]
    trust = _trust(a0)
    record = make_trust_record(ROOT, incident=INCIDENT, kind=TrustKind.REVOKE_CREDENTIAL,
                               subject=credential_id(cred), issued_at=int(WALL + net.now),
                               note="x")
    a0.pump.command(net.now, lambda: trust.originate(record, net.now))
    wall = WALL + net.now
    for i in range(50):
        other = Identity(bytes([i]) * 32)
        copied = make_binding(other, incident=INCIDENT, seq=1, aor=f"sip:x{i}@fire.example",
                              contacts=(), issued_at=wall, lifetime_s=600,
                              credential=cred.to_bytes())
        assert trust.binding_refusal(copied) == "credential_revoked"
        assert not trust.node_revoked(other.node_id)
    ident = b0.core.node.identity
    revoked = make_binding(ident, incident=INCIDENT, seq=10, aor=b0.aor, contacts=(),
                           issued_at=wall, lifetime_s=600, credential=cred.to_bytes())
    assert trust.binding_refusal(revoked) == "credential_revoked"
    assert trust.node_revoked(b0.core.node_id)
    older = make_binding(ident, incident=INCIDENT, seq=9, aor=b0.aor, contacts=(),
                         issued_at=wall - 100, lifetime_s=600)
    assert trust.binding_refusal(older) == ""
    assert trust.node_revoked(b0.core.node_id)
    newer = make_binding(ident, incident=INCIDENT, seq=11, aor=b0.aor, contacts=(),
                         issued_at=wall + 1, lifetime_s=600,
                         credential=_credential(b0, net).to_bytes())
    assert trust.binding_refusal(newer) == ""
    assert not trust.node_revoked(b0.core.node_id)
