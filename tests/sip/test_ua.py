"""Two (or three) UA cores wired in memory, with seeded random loss and virtual time."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from meshcomm.sip.presence import simple_presence
from meshcomm.sip.sdp import Direction, NotAcceptable, answer_offer, make_offer
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import (
    CallEnded,
    CallEndReason,
    CallEstablished,
    CallHandle,
    CallRinging,
    CallUpdated,
    EventKind,
    IncomingCall,
    IncomingMessage,
    IncomingRegister,
    IncomingSubscribe,
    Notified,
    RequestFailed,
    RequestSucceeded,
    SubscriptionEnded,
    SubscriptionState,
    UaConfig,
    UaEvent,
)

Address = tuple[str, int]
LOSS_SEEDS = [1, 2, 3, 4, 5, 6, 239]   # 239: every provisional response is lost


@dataclass
class Node:
    ua: UserAgent
    addr: Address
    events: list[UaEvent] = field(default_factory=list)
    react: Callable[[Node, UaEvent], None] | None = None

    def of(self, kind: EventKind) -> list[UaEvent]:
        return [e for e in self.events if e.kind is kind]


class Net:
    """Datagrams between UAs with loss and latency; time advances to the next thing."""

    def __init__(self, loss: float, seed: int, latency_s: float = 0.05) -> None:
        self.rng = random.Random(seed)
        self.loss, self.latency_s = loss, latency_s
        self.nodes: dict[Address, Node] = {}
        self.queue: list[tuple[float, int, bytes, Address, Address]] = []
        self.seq = 0
        self.now = 0.0
        self.sent = self.dropped = 0

    def add(self, name: str, last_octet: int) -> Node:
        addr = (f"10.0.0.{last_octet}", 5060)
        cfg = UaConfig(aor=f"sip:{name}@mesh.example", local_host=addr[0], local_port=5060)
        node = Node(UserAgent(cfg, random.Random(f"{name}-{last_octet}")), addr)
        self.nodes[addr] = node
        return node

    def _pump(self) -> None:
        for addr, node in self.nodes.items():
            for dgram in node.ua.to_send(self.now):
                self.sent += 1
                if self.rng.random() < self.loss:
                    self.dropped += 1
                    continue
                self.seq += 1
                heapq.heappush(self.queue, (self.now + self.latency_s, self.seq, dgram.data,
                                            addr, dgram.dest))
            while (event := node.ua.next_event()) is not None:
                node.events.append(event)
                if node.react is not None:
                    node.react(node, event)

    def step(self) -> bool:
        self._pump()
        timers = [(t, a) for a, n in self.nodes.items() if (t := n.ua.next_timer()) is not None]
        next_timer = min(timers, default=None)
        next_packet = self.queue[0][0] if self.queue else None
        if next_timer is None and next_packet is None:
            return False
        if next_packet is not None and (next_timer is None or next_packet <= next_timer[0]):
            at, _, data, src, dst = heapq.heappop(self.queue)
            self.now = max(self.now, at)
            if dst in self.nodes:
                self.nodes[dst].ua.receive(data, src, self.now)
        else:
            assert next_timer is not None
            self.now = max(self.now, next_timer[0])
            self.nodes[next_timer[1]].ua.on_timer(self.now)
        self._pump()
        return True

    def run_until(self, done: Callable[[], bool], limit_s: float = 400.0) -> None:
        while not done():
            assert self.now < limit_s, "scenario did not complete in virtual time"
            assert self.step(), "nothing left to do but the scenario is not complete"

    def settle(self, limit_s: float = 2000.0) -> None:
        """Run until no timers or packets are left (every transaction terminated)."""
        while self.step():
            assert self.now < limit_s


def auto_answer(node: Node, event: UaEvent) -> None:
    if isinstance(event, IncomingCall):
        assert event.offer is not None
        result = answer_offer(event.offer, address=node.addr[0], rtp_port=6000, session_id=2)
        assert not isinstance(result, NotAcceptable)
        node.ua.answer(event.call, result[0])


@pytest.mark.parametrize("seed", LOSS_SEEDS)
def test_register_under_loss(seed: int) -> None:
    net = Net(0.3, seed)
    alice, registrar = net.add("alice", 1), net.add("registrar", 9)

    def accept(node: Node, event: UaEvent) -> None:
        if isinstance(event, IncomingRegister):
            node.ua.accept_register(event.request, 600)

    registrar.react = accept
    # The AoR's domain is not routable in the mesh: REGISTER goes to an outbound proxy.
    alice.ua = UserAgent(UaConfig(aor="sip:alice@mesh.example", local_host="10.0.0.1",
                                  local_port=5060, outbound_proxy=registrar.addr),
                         random.Random(seed))
    handle = alice.ua.register(expires_s=600)
    net.run_until(lambda: bool(alice.of(EventKind.REQUEST_SUCCEEDED)
                               or alice.of(EventKind.REQUEST_FAILED)))
    (ok,) = alice.of(EventKind.REQUEST_SUCCEEDED)
    assert isinstance(ok, RequestSucceeded)
    assert ok.request == handle and ok.method == "REGISTER" and ok.expires_s == 600
    regs = registrar.of(EventKind.INCOMING_REGISTER)
    assert len(regs) == 1                              # retransmissions absorbed
    reg = regs[0]
    assert isinstance(reg, IncomingRegister)
    assert reg.aor.aor == "sip:alice@mesh.example" and reg.contacts[0].uri.host == "10.0.0.1"
    net.settle()


@pytest.mark.parametrize("seed", LOSS_SEEDS)
def test_message_under_loss(seed: int) -> None:
    net = Net(0.3, seed)
    alice, bob = net.add("alice", 1), net.add("bob", 2)
    handle = alice.ua.message("sip:bob@10.0.0.2", "water at sector 4")
    net.run_until(lambda: bool(alice.of(EventKind.REQUEST_SUCCEEDED)))
    (got,) = bob.of(EventKind.INCOMING_MESSAGE)        # exactly once
    assert isinstance(got, IncomingMessage) and got.body == b"water at sector 4"
    assert got.from_addr.uri.aor == "sip:alice@mesh.example"
    ok = alice.of(EventKind.REQUEST_SUCCEEDED)[0]
    assert isinstance(ok, RequestSucceeded) and ok.request == handle and ok.status == 200
    net.settle()
    assert len(bob.of(EventKind.INCOMING_MESSAGE)) == 1
    assert len(alice.ua.txl) == 0 and len(bob.ua.txl) == 0


def established(*nodes: Node) -> Callable[[], bool]:
    return lambda: all(n.of(EventKind.CALL_ESTABLISHED) for n in nodes)


def established_call(seed: int) -> tuple[Net, Node, Node, CallHandle]:
    """Alice calls an auto-answering Bob over a 30 % lossy net until both are established."""
    net = Net(0.3, seed)
    alice, bob = net.add("alice", 1), net.add("bob", 2)
    bob.react = auto_answer
    call = alice.ua.invite("sip:bob@10.0.0.2", make_offer(address="10.0.0.1", rtp_port=4000,
                                                         session_id=1))
    net.run_until(established(alice, bob))
    return net, alice, bob, call


@pytest.mark.parametrize("seed", LOSS_SEEDS)
def test_call_invite_ringing_answer_ack_bye_under_loss(seed: int) -> None:
    net, alice, bob, call = established_call(seed)
    assert len(alice.of(EventKind.CALL_ESTABLISHED)) == 1
    assert len(bob.of(EventKind.CALL_ESTABLISHED)) == 1
    assert len(bob.of(EventKind.INCOMING_CALL)) == 1
    est = alice.of(EventKind.CALL_ESTABLISHED)[0]
    assert isinstance(est, CallEstablished) and est.call == call
    assert est.remote_sdp is not None and est.remote_sdp.media[0].port == 6000
    ringing = alice.of(EventKind.CALL_RINGING)
    assert all(isinstance(r, CallRinging) and r.status == 180 for r in ringing)
    alice.ua.bye(call)
    net.run_until(lambda: bool(bob.of(EventKind.CALL_ENDED)))
    (ended_b,) = bob.of(EventKind.CALL_ENDED)
    (ended_a,) = alice.of(EventKind.CALL_ENDED)
    assert isinstance(ended_a, CallEnded) and ended_a.reason is CallEndReason.LOCAL_BYE
    assert isinstance(ended_b, CallEnded) and ended_b.reason is CallEndReason.REMOTE_BYE
    net.settle()
    assert len(alice.ua.txl) == 0 and len(bob.ua.txl) == 0


@pytest.mark.parametrize("seed", LOSS_SEEDS)
def test_reinvite_hold_and_resume_under_loss(seed: int) -> None:
    net, alice, bob, call = established_call(seed)
    alice.ua.hold(call)
    net.run_until(lambda: bool(alice.of(EventKind.CALL_UPDATED)))
    updated = alice.of(EventKind.CALL_UPDATED)[0]
    assert isinstance(updated, CallUpdated)
    assert updated.local_sdp is not None and updated.remote_sdp is not None
    assert updated.local_sdp.media[0].direction is Direction.SENDONLY
    assert updated.remote_sdp.media[0].direction is Direction.RECVONLY
    (bob_view,) = bob.of(EventKind.CALL_UPDATED)
    assert isinstance(bob_view, CallUpdated) and bob_view.local_sdp is not None
    assert bob_view.local_sdp.media[0].direction is Direction.RECVONLY
    alice.ua.resume(call)
    net.run_until(lambda: len(alice.of(EventKind.CALL_UPDATED)) == 2)
    resumed = alice.of(EventKind.CALL_UPDATED)[1]
    assert isinstance(resumed, CallUpdated) and resumed.remote_sdp is not None
    assert resumed.remote_sdp.media[0].direction is Direction.SENDRECV
    assert len([e for e in alice.of(EventKind.REQUEST_SUCCEEDED)
                if isinstance(e, RequestSucceeded) and e.method == "INVITE"]) == 2
    # Bob re-INVITEs back (the other direction) and then hangs up.
    bob_call = bob.of(EventKind.INCOMING_CALL)[0]
    assert isinstance(bob_call, IncomingCall)
    bob.ua.hold(bob_call.call)
    net.run_until(lambda: len(bob.of(EventKind.CALL_UPDATED)) == 3)
    assert isinstance(bob.of(EventKind.REQUEST_SUCCEEDED)[-1], RequestSucceeded)
    bob.ua.bye(bob_call.call)
    net.run_until(lambda: bool(alice.of(EventKind.CALL_ENDED)))
    net.settle()
    assert len(alice.ua.txl) == 0 and len(bob.ua.txl) == 0


@pytest.mark.parametrize("seed", LOSS_SEEDS)
def test_cancel_under_loss(seed: int) -> None:
    net = Net(0.3, seed)
    alice, bob = net.add("alice", 1), net.add("bob", 2)
    call = alice.ua.invite("sip:bob@10.0.0.2", make_offer(address="10.0.0.1", rtp_port=4000,
                                                         session_id=1))
    net.run_until(lambda: bool(bob.of(EventKind.INCOMING_CALL)))
    alice.ua.cancel(call)          # possibly before any provisional arrived: §9.1 waits
    net.run_until(lambda: bool(alice.of(EventKind.CALL_ENDED) and bob.of(EventKind.CALL_ENDED)))
    (a,) = alice.of(EventKind.CALL_ENDED)
    (b,) = bob.of(EventKind.CALL_ENDED)
    assert isinstance(a, CallEnded) and a.reason is CallEndReason.CANCELLED
    assert isinstance(b, CallEnded)
    if a.status == 487:
        assert b.reason is CallEndReason.CANCELLED
    else:   # every provisional was lost: no CANCEL may be sent (§9.1); Timer B, Timer C
        assert a.status == 408 and b.reason is CallEndReason.TIMEOUT and b.status == 480
    assert not alice.of(EventKind.CALL_ESTABLISHED)
    net.settle()
    assert len(alice.ua.txl) == 0 and len(bob.ua.txl) == 0


def cancel_racing_200(net: Net) -> tuple[Node, Node]:
    """alice calls bob; bob answers 200 while alice cancels (they cross on the wire); run
    until bob's side of the call has ended."""
    alice, bob = net.add("alice", 1), net.add("bob", 2)
    call = alice.ua.invite("sip:bob@10.0.0.2", make_offer(address="10.0.0.1", rtp_port=4000,
                                                         session_id=1))
    net.run_until(lambda: bool(alice.of(EventKind.CALL_RINGING)))
    incoming = bob.of(EventKind.INCOMING_CALL)[0]
    assert isinstance(incoming, IncomingCall) and incoming.offer is not None
    result = answer_offer(incoming.offer, address="10.0.0.2", rtp_port=6000, session_id=2)
    assert not isinstance(result, NotAcceptable)
    bob.ua.answer(incoming.call, result[0])     # 200 and CANCEL cross on the wire
    alice.ua.cancel(call)
    net.run_until(lambda: bool(bob.of(EventKind.CALL_ENDED)))
    return alice, bob


def test_cancel_racing_200_ok_ends_with_bye() -> None:
    net = Net(0.0, 1)
    alice, bob = cancel_racing_200(net)
    (a,) = alice.of(EventKind.CALL_ENDED)
    assert isinstance(a, CallEnded) and a.reason is CallEndReason.CANCELLED and a.status == 200
    (b,) = bob.of(EventKind.CALL_ENDED)
    assert isinstance(b, CallEnded) and b.reason is CallEndReason.REMOTE_BYE
    net.settle()


@pytest.mark.parametrize("seed", LOSS_SEEDS)
def test_subscribe_notify_presence_under_loss(seed: int) -> None:
    net = Net(0.3, seed)
    alice, bob = net.add("alice", 1), net.add("bob", 2)

    def notifier(node: Node, event: UaEvent) -> None:
        if isinstance(event, IncomingSubscribe) and event.expires_s > 0:
            node.ua.notify(event.subscription, simple_presence("pres:bob@mesh.example", True))

    bob.react = notifier
    sub = alice.ua.subscribe("sip:bob@10.0.0.2", expires_s=600)
    net.run_until(lambda: bool(alice.of(EventKind.NOTIFIED)))
    first = alice.of(EventKind.NOTIFIED)[0]
    assert isinstance(first, Notified) and first.subscription == sub
    assert first.state is SubscriptionState.ACTIVE
    assert first.presence is not None and first.presence.is_open
    (incoming,) = bob.of(EventKind.INCOMING_SUBSCRIBE)
    assert isinstance(incoming, IncomingSubscribe)
    bob.ua.notify(incoming.subscription, simple_presence("pres:bob@mesh.example", False))
    net.run_until(lambda: len(alice.of(EventKind.NOTIFIED)) == 2)
    second = alice.of(EventKind.NOTIFIED)[1]
    assert isinstance(second, Notified) and second.presence is not None
    assert not second.presence.is_open
    alice.ua.unsubscribe(sub)
    net.run_until(lambda: bool(alice.of(EventKind.SUBSCRIPTION_ENDED)
                               and bob.of(EventKind.SUBSCRIPTION_ENDED)))
    last = alice.of(EventKind.NOTIFIED)[-1]
    assert isinstance(last, Notified) and last.state is SubscriptionState.TERMINATED
    net.settle()
    assert len(alice.of(EventKind.NOTIFIED)) == 3


def test_subscription_expires_with_final_notify() -> None:
    net = Net(0.0, 1)
    alice, bob = net.add("alice", 1), net.add("bob", 2)
    bob.react = lambda n, e: n.ua.notify(e.subscription, simple_presence("pres:b@x", True)) \
        if isinstance(e, IncomingSubscribe) else None
    alice.ua.subscribe("sip:bob@10.0.0.2", expires_s=60)
    net.settle()
    states = [e.state for e in alice.of(EventKind.NOTIFIED) if isinstance(e, Notified)]
    assert states == [SubscriptionState.ACTIVE, SubscriptionState.TERMINATED]
    (ended,) = bob.of(EventKind.SUBSCRIPTION_ENDED)
    assert isinstance(ended, SubscriptionEnded) and ended.reason == "timeout"
    assert 60.0 <= net.now < 400.0


def test_timer_b_timeout_when_peer_is_silent() -> None:
    net = Net(0.0, 1)
    alice = net.add("alice", 1)
    call = alice.ua.invite("sip:nobody@10.0.0.99", make_offer(address="10.0.0.1",
                                                              rtp_port=4000, session_id=1))
    handle = alice.ua.message("sip:nobody@10.0.0.99", "hello?")
    net.settle()
    (ended,) = alice.of(EventKind.CALL_ENDED)
    assert isinstance(ended, CallEnded) and ended.call == call
    assert ended.reason is CallEndReason.TIMEOUT
    (failed,) = alice.of(EventKind.REQUEST_FAILED)
    assert isinstance(failed, RequestFailed) and failed.request == handle
    assert failed.status == 408
    assert net.sent == 7 + 11     # INVITE: 1 + 6 Timer A; MESSAGE: 1 + 10 Timer E (T1=1, T2=8)


def test_answer_reject_and_unacceptable_offer() -> None:
    net = Net(0.0, 1)
    alice, bob = net.add("alice", 1), net.add("bob", 2)
    bob.react = lambda n, e: n.ua.reject(e.call, 486) if isinstance(e, IncomingCall) else None
    call = alice.ua.invite("sip:bob@10.0.0.2", make_offer(address="10.0.0.1", rtp_port=4000,
                                                         session_id=1))
    net.run_until(lambda: bool(alice.of(EventKind.CALL_ENDED)))
    (ended,) = alice.of(EventKind.CALL_ENDED)
    assert isinstance(ended, CallEnded) and ended.call == call
    assert ended.reason is CallEndReason.REJECTED and ended.status == 486
    from meshcomm.sip.sdp import AudioCodec, AudioPolicy
    pcma_only = make_offer(address="10.0.0.1", rtp_port=4000, session_id=1,
                           policy=AudioPolicy(codecs=(AudioCodec.PCMA,)))
    bob.ua = UserAgent(UaConfig(aor="sip:bob@mesh.example", local_host="10.0.0.2",
                                local_port=5060,
                                audio=AudioPolicy(codecs=(AudioCodec.OPUS,))),
                       random.Random(2))
    call2 = alice.ua.invite("sip:bob@10.0.0.2", pcma_only)
    net.run_until(lambda: len(alice.of(EventKind.CALL_ENDED)) == 2)
    ended2 = alice.of(EventKind.CALL_ENDED)[1]
    assert isinstance(ended2, CallEnded) and ended2.call == call2 and ended2.status == 488
    assert not bob.of(EventKind.INCOMING_CALL) or len(bob.of(EventKind.INCOMING_CALL)) == 1


def test_same_seed_same_trace() -> None:
    def run() -> list[str]:
        net, alice, bob, call = established_call(42)
        alice.ua.bye(call)
        net.settle()
        return [f"{net.now:.3f}", str(net.sent), str(net.dropped)] + [
            repr(e) for e in alice.events + bob.events]
    assert run() == run()

