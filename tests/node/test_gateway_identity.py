"""SIP identity bound to the signing key (issue 12 point 1) across an in-memory chain of
whole nodes: the origin gateway refuses a client's From it does not hold, every receiving
gateway refuses a From bound to another node than the envelope's signer, and the
destination asserts a verified caller (RFC 3325 P-Asserted-Identity)."""

from __future__ import annotations

from meshcomm.node.gateway.edge_identity import EdgeCounter
from meshcomm.node.gateway.identity import IdentityCounter
from meshcomm.node.gateway.types import MeshSip
from meshcomm.sip.build import build_response
from meshcomm.sip.message import SipRequest, SipResponse
from tests.node.gateway_net import DOMAIN, Net
from tests.node.raw_sip import raw_register, raw_request, received, statuses

ALICE_AT = ("127.0.0.1", 5070)        # node 0
CHIEF_AT = ("127.0.0.1", 5072)        # node 2
CAROL_AT = ("127.0.0.1", 5073)        # node 3
CHIEF = f"sip:ops-chief@{DOMAIN}"


def chain() -> Net:
    net = Net(4)
    net.converge()
    raw_register(net, 0, ALICE_AT, "alice")
    raw_register(net, 2, CHIEF_AT, "ops-chief")
    raw_register(net, 3, CAROL_AT, "carol")
    net.run_until(lambda: all(net.stations[i].node.table.lookup(a) for i in (0, 3)
                              for a in (CHIEF, f"sip:carol@{DOMAIN}", f"sip:alice@{DOMAIN}")))
    return net


def messages_at(net: Net, index: int, addr: tuple[str, int]) -> list[SipRequest]:
    return [m for m in received(net, index, addr)
            if isinstance(m, SipRequest) and m.method == "MESSAGE"]


def drops(net: Net, index: int, reason: str) -> list[dict[str, object]]:
    return [r for r in net.stations[index].sip_journal() if r.get("reason") == reason]


def send(net: Net, index: int, src: tuple[str, int], from_user: str, text: str,
         headers: tuple[str, ...] = ()) -> None:
    data = raw_request("MESSAGE", "carol", src, from_user=from_user, branch=f"b{abs(hash(text))}",
                       call_id=f"c-{abs(hash(text))}", body=text, headers=headers)
    net.stations[index].sip.receive_sip(data, src, net.now)
    net.run_for(3.0)


def test_client_spoofing_an_aor_bound_at_another_node_gets_403_journaled() -> None:
    net = chain()
    send(net, 0, ALICE_AT, "ops-chief", "evacuate now")
    assert statuses(net, 0, ALICE_AT)[-1] == 403
    assert messages_at(net, 3, CAROL_AT) == []
    assert net.stations[0].gw.counters[IdentityCounter.REFUSED_LOCAL] == 1
    assert drops(net, 0, "from_not_held_here")
    # the same client speaking as itself goes through, asserted at the destination
    send(net, 0, ALICE_AT, "alice", "genuine", headers=(f"P-Asserted-Identity: <{CHIEF}>",))
    got = messages_at(net, 3, CAROL_AT)[0]    # (then retransmitted: carol never answers)
    assert got.body == b"genuine"
    assert got.header_values("P-Asserted-Identity") == [f"<sip:alice@{DOMAIN}>"]
    # the client's PAI is removed where it would enter the mesh (gateway.edge_identity)
    assert net.stations[0].gw.counters[EdgeCounter.INGRESS_STRIPPED] >= 1


def test_another_host_or_the_nodes_own_aor_is_refused_at_the_origin() -> None:
    net = chain()
    elsewhere = ("10.9.9.9", 5070)
    send(net, 0, elsewhere, "alice", "from another host")
    send(net, 0, ALICE_AT, "node0", "as the node")
    assert statuses(net, 0, elsewhere)[-1] == 403 and statuses(net, 0, ALICE_AT)[-1] == 403
    assert drops(net, 0, "from_held_by_other_client") and drops(net, 0, "from_not_held_here")
    assert messages_at(net, 3, CAROL_AT) == []


def test_unbound_from_passes_unverified_under_the_open_policy() -> None:
    """A stock SIPp uac sends From an AoR nobody registered: zero configuration."""
    net = chain()
    stranger = ("127.0.0.1", 5099)
    send(net, 0, stranger, "sipp", "hello", headers=(f"P-Asserted-Identity: <{CHIEF}>",))
    got = messages_at(net, 3, CAROL_AT)[0]
    assert got.body == b"hello"
    assert got.header_values("P-Asserted-Identity") == []      # stripped, nothing asserted
    assert net.stations[3].gw.counters[IdentityCounter.UNVERIFIED] == 1


def test_a_node_signing_a_spoofed_from_is_refused_at_the_destination() -> None:
    """The real node 0 core signs an envelope whose SIP claims the ops chief (bound at
    node 2): node 3's gateway refuses it with 403 back to node 0, journaled, counted."""
    net = chain()
    rogue, target = net.stations[0], net.stations[3]
    via = f"Via: SIP/2.0/UDP {rogue.gw.mesh_host};branch=z9hG4bKrogue1"
    data = raw_request("MESSAGE", "carol", ALICE_AT, from_user="ops-chief", branch="x",
                       call_id="rogue-1", body="stand down").replace(
        f"Via: SIP/2.0/UDP {ALICE_AT[0]}:{ALICE_AT[1]};branch=z9hG4bKx;rport".encode(),
        via.encode())
    # the core's own to-mesh path (sealed end to end like any SIP it sends), signed by
    # node 0's key: what a node built to spoof would put on the air
    rogue.pump.command(net.now, lambda: rogue.sip._sip_to_mesh(
        MeshSip(target.node.node_id, data, None), net.now))
    net.run_for(3.0)
    assert messages_at(net, 3, CAROL_AT) == []
    assert target.gw.counters[IdentityCounter.REFUSED_MESH] == 1
    assert drops(net, 3, "from_bound_elsewhere")
    answers = [r for r in target.sip_journal()
               if r.get("dir") == "originated" and r.get("status") == 403]
    assert answers


def message_answers(net: Net) -> list[SipResponse]:
    return [m for m in received(net, 0, ALICE_AT)
            if isinstance(m, SipResponse) and m.cseq.method == "MESSAGE" and m.status >= 200]


def test_responses_only_from_the_asked_node_and_without_foreign_identity_headers() -> None:
    """A 200 for node 0's transaction signed by node 1 (not the node asked) is dropped;
    the genuine 200 from carol's node reaches alice without the PAI carol's client put in."""
    net = chain()
    send(net, 0, ALICE_AT, "alice", "answer me")
    copy = messages_at(net, 3, CAROL_AT)[0]
    towards_node0 = copy.with_headers_replaced("Via", copy.header_values("Via")[1:])
    forged = build_response(towards_node0, 200, to_tag="forged").serialize()
    intruder, origin = net.stations[1], net.stations[0]
    intruder.pump.command(net.now, lambda: intruder.sip._sip_to_mesh(
        MeshSip(origin.node.node_id, forged, None), net.now))
    net.run_for(1.0)
    assert origin.gw.counters[IdentityCounter.FOREIGN_RESPONSES] == 1
    assert message_answers(net) == []
    answer = build_response(copy, 200, to_tag="carol1").with_headers_replaced(
        "P-Asserted-Identity", [f"<{CHIEF}>"])
    net.stations[3].sip.receive_sip(answer.serialize(), CAROL_AT, net.now)
    net.run_for(3.0)
    (final,) = message_answers(net)
    assert final.status == 200
    assert final.header_values("P-Asserted-Identity") == []
