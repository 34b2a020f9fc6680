"""P-Asserted-Identity of requests from the upstream SIP proxy (``[upstream] trusted``,
:mod:`meshcomm.node.gateway.edge_identity`), across an in-memory chain of whole nodes
under the agency policy: n0 is the uplinked relay the PBX sends to, carol's raw client is
at n3 (three hops), alice is bound at n1."""

from __future__ import annotations

import pytest

from meshcomm.location.table import TrustMode, TrustPolicy
from meshcomm.node.gateway.edge_identity import EdgeCounter
from meshcomm.node.gateway.types import Address, GatewayConfig, MeshSip
from meshcomm.security.credentials import issue_credential
from meshcomm.security.identity import Identity
from meshcomm.sip.message import SipRequest
from tests.node.gateway_net import DOMAIN, Net
from tests.node.raw_sip import raw_register, raw_request, received, statuses

AGENCY = Identity(bytes(range(5, 37)))
PBX: Address = ("192.0.2.10", 5060)
ALICE_AT: Address = ("127.0.0.1", 5071)   # n1
CAROL_AT: Address = ("127.0.0.1", 5073)   # n3
AT_RELAY: Address = ("127.0.0.1", 5070)   # dave, a client of the relay n0
WALL = 1.7e9
DESK = f'"Dispatch desk" <sip:desk1@{DOMAIN}>'


def net_of(*, trusted: bool, policy: TrustMode = TrustMode.AGENCY) -> Net:
    def credential(_index: int, ident: Identity) -> bytes:
        return issue_credential(AGENCY, aor_pattern=f"sip:*@{DOMAIN}", role="medic",
                                device_key=ident.public_key, issued_at=int(WALL) - 3600,
                                expires_at=int(WALL) + 86400).to_bytes()
    net = Net(4, config=GatewayConfig(upstream=PBX, upstream_trusted=trusted),
              trust=TrustPolicy(policy, frozenset({AGENCY.public_key})),
              credential=credential if policy is TrustMode.AGENCY else None)
    net.converge()
    for index, addr, user in ((1, ALICE_AT, "alice"), (3, CAROL_AT, "carol"),
                              (0, AT_RELAY, "dave")):
        raw_register(net, index, addr, user)
    net.run_until(lambda: all(st.node.table.lookup(f"sip:{u}@{DOMAIN}") for st in net.stations
                              for u in ("alice", "carol", "dave")))
    return net


def from_pbx(net: Net, to_user: str, from_user: str, *headers: str) -> None:
    tag = f"{to_user}-{from_user}-{abs(hash(headers))}"
    data = raw_request("MESSAGE", to_user, PBX, from_user=from_user, branch=tag,
                       call_id=f"c-{tag}", body="from the desk", headers=headers)
    net.stations[0].sip.receive_sip(data, PBX, net.now)
    net.run_for(3.0)


def last_message(net: Net, index: int, addr: Address) -> SipRequest:
    got = [m for m in received(net, index, addr)
           if isinstance(m, SipRequest) and m.method == "MESSAGE"]
    assert got, "nothing arrived"
    return got[-1]


def test_an_untrusted_upstream_asserts_nothing() -> None:
    """Default: the PBX's PAI and PPI are removed at the relay; carol (three hops away)
    and dave (at the relay) see an unverified caller."""
    net = net_of(trusted=False)
    for user, index, addr in (("carol", 3, CAROL_AT), ("dave", 0, AT_RELAY)):
        from_pbx(net, user, "desk1", f"P-Asserted-Identity: {DESK}",
                 f"P-Preferred-Identity: <sip:desk1@{DOMAIN}>")
        got = last_message(net, index, addr)
        assert got.body == b"from the desk"
        assert got.header_values("P-Asserted-Identity") == []
        assert got.header_values("P-Preferred-Identity") == []
    relay = net.stations[0].gw.counters
    assert relay[EdgeCounter.UPSTREAM_STRIPPED] == 2
    assert relay[EdgeCounter.UPSTREAM_KEPT] == 0
    assert net.stations[3].gw.counters[EdgeCounter.RELAYED] == 0


def test_a_trusted_upstream_keeps_its_assertion_to_the_callee() -> None:
    net = net_of(trusted=True)
    from_pbx(net, "carol", "desk1", f"P-Asserted-Identity: {DESK}, <tel:+15551234>",
             f"P-Preferred-Identity: <sip:desk1@{DOMAIN}>")
    got = last_message(net, 3, CAROL_AT)
    assert got.header_values("P-Asserted-Identity") == [DESK, "<tel:+15551234>"]
    assert got.header_values("P-Preferred-Identity") == []
    assert net.stations[0].gw.counters[EdgeCounter.UPSTREAM_KEPT] == 1
    assert net.stations[3].gw.counters[EdgeCounter.RELAYED] == 1
    from_pbx(net, "dave", "desk1", f"P-Asserted-Identity: {DESK}")   # at the relay itself
    assert last_message(net, 0, AT_RELAY).header_values("P-Asserted-Identity") == [DESK]
    from_pbx(net, "carol", "desk2")                                   # nothing asserted
    assert last_message(net, 3, CAROL_AT).header_values("P-Asserted-Identity") == []


@pytest.mark.parametrize("pai", [
    f"<sip:alice@{DOMAIN}>",                     # an AoR a mesh key holds
    f"<sip:node2@{DOMAIN}>",                     # a node's own AoR
    f"<sip:ops-chief@{DOMAIN}>",                 # a role address, held by nobody now
    f"{DESK}, <sip:carol@{DOMAIN}>",             # one foreign, one mesh: all goes
    f"{DESK}, <tel:+1555>, <tel:+1556>",         # more than RFC 3325 allows
    ", ".join(f"<sip:d{i}@pbx.example>" for i in range(200)),   # a flood of values
    "<http://example.com/me>",                   # not a SIP or tel identity
    "<sip:desk1@",                               # malformed
])
def test_a_trusted_upstream_cannot_assert_a_mesh_identity(pai: str) -> None:
    net = net_of(trusted=True)
    from_pbx(net, "carol", "desk1", f"P-Asserted-Identity: {pai}")
    assert last_message(net, 3, CAROL_AT).header_values("P-Asserted-Identity") == []
    assert net.stations[0].gw.counters[EdgeCounter.UPSTREAM_REFUSED] == 1


@pytest.mark.parametrize("trusted", [False, True])
def test_a_from_bound_to_a_mesh_key_from_upstream_is_refused(trusted: bool) -> None:
    net = net_of(trusted=trusted)
    from_pbx(net, "carol", "alice", f"P-Asserted-Identity: <sip:alice@{DOMAIN}>")
    assert 403 in statuses(net, 0, PBX)
    assert [m for m in received(net, 3, CAROL_AT) if isinstance(m, SipRequest)
            and m.method == "MESSAGE"] == []
    assert any(r.get("reason") == "from_not_held_here" for r in net.stations[0].sip_journal())


def _injected(net: Net, sender: int, pai: str) -> SipRequest:
    """A node built to put a PAI into the mesh itself (past its gateway's edge): the SIP
    signed by node ``sender``'s real key, straight to carol's node."""
    data = raw_request("MESSAGE", "carol", ("127.0.0.1", 5999), from_user="desk7",
                       branch=f"inj{abs(hash(pai))}", call_id=f"inj-{abs(hash(pai))}",
                       body="injected", headers=(f"P-Asserted-Identity: {pai}",))
    st, dest = net.stations[sender], net.stations[3].node.node_id
    st.pump.command(net.now, lambda: st.sip._sip_to_mesh(MeshSip(dest, data, None), net.now))
    net.run_for(3.0)
    return last_message(net, 3, CAROL_AT)


def test_the_destination_keeps_a_relayed_assertion_only_from_a_member_and_foreign() -> None:
    net = net_of(trusted=False)
    got = _injected(net, 2, f"<sip:alice@{DOMAIN}>")     # a mesh identity: never
    assert got.body == b"injected" and got.header_values("P-Asserted-Identity") == []
    got = _injected(net, 2, DESK)                        # a credentialed member's word
    assert got.header_values("P-Asserted-Identity") == [DESK]


def test_under_open_no_relayed_assertion_is_kept() -> None:
    """Anyone may join an ``open`` mesh: a node's word for a caller beyond it is kept by
    nobody (the runtime refuses ``trusted`` under ``open``)."""
    net = net_of(trusted=True, policy=TrustMode.OPEN)
    got = _injected(net, 2, DESK)
    assert got.body == b"injected" and got.header_values("P-Asserted-Identity") == []
    assert net.stations[3].gw.counters[EdgeCounter.RELAYED] == 0
