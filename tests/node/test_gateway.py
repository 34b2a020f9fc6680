"""The SIP gateway across an in-memory mesh: stock SIP UAs (meshcomm.sip.ua) register to
their node's gateway and reach each other several radio hops away."""

from __future__ import annotations

from meshcomm.node.gateway.types import SendStatus
from meshcomm.sip.presence import simple_presence
from meshcomm.sip.sdp import NotAcceptable, answer_offer, make_offer
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import (
    CallEnded,
    CallEndReason,
    CallEstablished,
    CallRinging,
    CallUpdated,
    IncomingCall,
    IncomingMessage,
    IncomingSubscribe,
    Notified,
    RequestFailed,
    RequestSucceeded,
    UaEvent,
)
from tests.node.gateway_net import DOMAIN, Net, of_kind, registered


def test_register_becomes_a_binding_seen_on_the_far_node() -> None:
    net = Net(3)
    net.converge()
    registered(net, 0, 5070, "alice")
    aor = f"sip:alice@{DOMAIN}"
    net.run_until(lambda: bool(net.stations[2].node.table.lookup(aor)))
    (stored,) = net.stations[2].node.table.lookup(aor)
    assert stored.binding.node_id == net.stations[0].node.node_id
    assert stored.binding.contacts == (f"sip:alice@{net.stations[0].gw.mesh_host}",)
    ok = of_kind(net.events(0, 5070), RequestSucceeded)
    assert ok[0].status == 200 and ok[0].expires_s == 600


def test_message_across_three_hops_delivered_once_with_200_back() -> None:
    net = Net(4)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    registered(net, 3, 5071, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    handle = alice.message(f"sip:bob@{DOMAIN}", "water at sector 4")
    net.run_until(lambda: bool(of_kind(net.events(0, 5070), RequestSucceeded)[1:]))
    net.run_for(20.0)      # retransmissions and late copies must not deliver it again
    got = of_kind(net.events(3, 5071), IncomingMessage)
    assert [m.body for m in got] == [b"water at sector 4"]
    assert got[0].from_addr.uri.aor == f"sip:alice@{DOMAIN}"
    done = [e for e in of_kind(net.events(0, 5070), RequestSucceeded) if e.request == handle]
    assert [e.status for e in done] == [200]
    far = [r for r in net.stations[3].sip_journal() if r.get("method") == "MESSAGE"]
    assert {r["dir"] for r in far} >= {"from-mesh", "to-client"}
    assert any(r["dir"] == "from-mesh" and r["hops"] == 3 for r in far)


def _auto_answer(ua: UserAgent, event: UaEvent, port: int) -> None:
    if isinstance(event, IncomingCall):
        assert event.offer is not None
        result = answer_offer(event.offer, address="127.0.0.1", rtp_port=port, session_id=2)
        assert not isinstance(result, NotAcceptable)
        ua.answer(event.call, result[0])


def test_call_invite_ringing_answer_ack_reinvite_bye_across_the_mesh() -> None:
    net = Net(3)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    bob = registered(net, 2, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    call = alice.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1", rtp_port=4000,
                                                       session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(2, 5072), IncomingCall)))
    _auto_answer(bob, of_kind(net.events(2, 5072), IncomingCall)[0], 6000)
    net.run_until(lambda: bool(of_kind(net.events(0, 5070), CallEstablished))
                  and bool(of_kind(net.events(2, 5072), CallEstablished)))
    assert [r.status for r in of_kind(net.events(0, 5070), CallRinging)][:1] == [180]
    est = of_kind(net.events(0, 5070), CallEstablished)[0]
    assert est.remote_sdp is not None and est.remote_sdp.media[0].port == 6000
    # The ACK crossed the mesh along the Record-Route: bob's 2xx is no longer retransmitted.
    net.run_for(5.0)
    assert not bob._pending_2xx
    acks = [r for r in net.stations[2].sip_journal() if r.get("method") == "ACK"]
    assert any(r["dir"] == "from-mesh" for r in acks)
    alice.hold(call)
    net.run_until(lambda: bool(of_kind(net.events(0, 5070), CallUpdated)))
    alice.bye(call)
    net.run_until(lambda: bool(of_kind(net.events(2, 5072), CallEnded)))
    (ended_b,) = of_kind(net.events(2, 5072), CallEnded)
    assert ended_b.reason is CallEndReason.REMOTE_BYE
    (ended_a,) = of_kind(net.events(0, 5070), CallEnded)
    assert ended_a.reason is CallEndReason.LOCAL_BYE
    byes = [r for r in net.stations[2].sip_journal() if r.get("method") == "BYE"]
    assert any(r["dir"] == "from-mesh" for r in byes)


def test_in_dialog_bye_from_the_callee_follows_the_record_route() -> None:
    net = Net(2)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    bob = registered(net, 1, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    alice.invite(f"sip:bob@{DOMAIN}", make_offer(address="127.0.0.1", rtp_port=4000,
                                                session_id=1))
    net.run_until(lambda: bool(of_kind(net.events(1, 5072), IncomingCall)))
    incoming = of_kind(net.events(1, 5072), IncomingCall)[0]
    _auto_answer(bob, incoming, 6000)
    net.run_until(lambda: bool(of_kind(net.events(1, 5072), CallEstablished)))
    bob.bye(incoming.call)
    net.run_until(lambda: bool(of_kind(net.events(0, 5070), CallEnded)))
    assert of_kind(net.events(0, 5070), CallEnded)[0].reason is CallEndReason.REMOTE_BYE


def test_subscribe_notify_and_options_across_the_mesh() -> None:
    net = Net(3)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    bob = registered(net, 2, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(f"sip:bob@{DOMAIN}")))
    options = alice.options(f"sip:bob@{DOMAIN}")
    sub = alice.subscribe(f"sip:bob@{DOMAIN}")
    net.run_until(lambda: bool(of_kind(net.events(2, 5072), IncomingSubscribe)))
    incoming = of_kind(net.events(2, 5072), IncomingSubscribe)[0]
    bob.notify(incoming.subscription, simple_presence(f"sip:bob@{DOMAIN}", True,
                                                     note="on scene"))
    net.run_until(lambda: any(n.presence is not None and "on scene" in n.presence.tuples[0].notes
                              for n in of_kind(net.events(0, 5070), Notified)))
    assert [n.subscription for n in of_kind(net.events(0, 5070), Notified)][-1] == sub
    assert any(e.request == options and e.status == 200
               for e in of_kind(net.events(0, 5070), RequestSucceeded))


def test_unknown_aor_is_404() -> None:
    net = Net(2)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    handle = alice.message(f"sip:nobody@{DOMAIN}", "hello?")
    net.run_until(lambda: bool(of_kind(net.events(0, 5070), RequestFailed)))
    (failed,) = of_kind(net.events(0, 5070), RequestFailed)
    assert failed.request == handle and failed.status == 404


def test_builtin_send_and_inbox() -> None:
    net = Net(3)
    net.converge()
    gw0, gw2 = net.stations[0].gw, net.stations[2].gw
    send_id = gw0.send_message("sip:node2@incident.local", "status report", net.now)
    net.run_until(lambda: gw0.outbox[send_id].status is not SendStatus.PENDING)
    assert gw0.outbox[send_id].status is SendStatus.DELIVERED
    assert [(e.from_aor, e.body) for e in gw2.inbox] == [("sip:node0@incident.local",
                                                          b"status report")]
    net.run_for(10.0)
    assert len(gw2.inbox) == 1
