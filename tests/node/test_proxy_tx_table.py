"""The proxy transaction table (meshcomm/node/gateway/proxy_state.py): shape, the inputs the
gateway applies, illegal transitions, and the transitions real gateways take (messages,
calls, CANCEL, store-and-forward holds, a copy waiting for the first, lingering out and
eviction)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

import meshcomm.node.gateway.custody as custody
import meshcomm.node.gateway.parts as parts
import meshcomm.node.gateway.responses as responses
import meshcomm.node.gateway.transactions as transactions
from meshcomm.errors import LocalProtocolError
from meshcomm.node.gateway import beyond, core
from meshcomm.node.gateway.core import LINGER_FACTOR, LINGER_S
from meshcomm.node.gateway.parts import message_id
from meshcomm.node.gateway.proxy_state import (
    INITIAL_PROXY_TX_STATE,
    PROXY_TX_TABLE,
    ProxyTxInput,
    ProxyTxState,
    proxy_allows,
    proxy_transition,
)
from meshcomm.node.gateway.types import GatewayConfig
from meshcomm.node.storeforward import StoreForwardConfig
from meshcomm.sip.build import build_response
from meshcomm.sip.message import SipRequest, parse_message_untrusted
from meshcomm.sip.sdp import NotAcceptable, answer_offer, make_offer
from meshcomm.sip.ua_events import (
    CallEnded,
    CallEstablished,
    CallRinging,
    IncomingCall,
    RequestFailed,
    RequestSucceeded,
)
from tests.node.gateway_net import (
    DOMAIN,
    Net,
    attach_store_forward,
    of_kind,
    registered,
)
from tests.node.raw_sip import raw_register, raw_request, received, statuses
from tests.state_tables import reachable

S, I = ProxyTxState, ProxyTxInput  # noqa: E741
Step = tuple[ProxyTxState, ProxyTxInput]
BOB = f"sip:bob@{DOMAIN}"
RAW_ALICE = ("127.0.0.1", 5080)
RAW_BOB = ("127.0.0.1", 5090)
RAW_CAROL = ("127.0.0.1", 5095)
SF_CONFIG = StoreForwardConfig(poll_interval_s=0.5, retry_initial_s=1.0, retry_max_s=2.0)


def _inputs_named_by_gateway() -> set[ProxyTxInput]:
    """Every ``TxIn.X`` the gateway's source names (what it can apply)."""
    used: set[ProxyTxInput] = set()
    for module in (core, beyond, custody, responses, transactions):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        used |= {ProxyTxInput[node.attr] for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                 and node.value.id == "TxIn"}
    return used


def test_table_shape() -> None:
    states = {s for key in PROXY_TX_TABLE for s in (key[0], PROXY_TX_TABLE[key])}
    assert states == set(ProxyTxState) == reachable(PROXY_TX_TABLE, INITIAL_PROXY_TX_STATE)
    assert not [key for key in PROXY_TX_TABLE if key[0] is S.TERMINATED]   # final
    for state in set(ProxyTxState) - {S.TERMINATED}:                          # all can end
        assert S.TERMINATED in reachable(PROXY_TX_TABLE, state), state
    # Only a final answer leads to COMPLETED, and only from COMPLETED is state dropped.
    into_completed = {key[1] for key, dst in PROXY_TX_TABLE.items() if dst is S.COMPLETED}
    assert into_completed == {I.RECV_FINAL, I.SEND_FINAL}
    assert {key[0] for key, dst in PROXY_TX_TABLE.items() if dst is S.TERMINATED} == {
        S.COMPLETED}
    # Every live state can be answered from here (a timeout or the first copy's answer).
    for state in (S.ROUTING, S.TRYING, S.PROCEEDING, S.HOLDING, S.WAITING):
        assert proxy_transition(state, I.SEND_FINAL) is S.COMPLETED


def test_every_input_is_applied_by_the_gateway() -> None:
    assert _inputs_named_by_gateway() == set(ProxyTxInput)
    assert {key[1] for key in PROXY_TX_TABLE} == set(ProxyTxInput)


@pytest.mark.parametrize(("state", "event"), [
    (S.COMPLETED, I.SEND_FINAL),       # one final answer per transaction
    (S.COMPLETED, I.RECV_FINAL),       # a retransmitted final is absorbed, not applied
    (S.COMPLETED, I.RECV_1XX),         # §16.7 step 5: no 1xx after the final
    (S.COMPLETED, I.FORWARD),
    (S.TERMINATED, I.LINGER_END),
    (S.TRYING, I.FORWARD),             # one branch per request
    (S.TRYING, I.WAIT),
    (S.WAITING, I.FORWARD),            # a waiting copy is never delivered itself
    (S.WAITING, I.RECV_1XX),           # it has no branch
    (S.ROUTING, I.RECV_1XX),
    (S.HOLDING, I.HOLD),               # held once
    (S.HOLDING, I.CANCEL),             # CANCEL applies to a pending INVITE only
    (S.TRYING, I.LINGER_END),          # only a completed transaction lingers out
    (S.PROCEEDING, I.EVICT),           # eviction takes answered transactions only
])
def test_illegal_transition_raises(state: ProxyTxState, event: ProxyTxInput) -> None:
    assert not proxy_allows(state, event)
    with pytest.raises(LocalProtocolError, match=event.value):
        proxy_transition(state, event)


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[Step]:
    """Record every transition a gateway attempts (the real function still decides)."""
    taken: list[Step] = []

    def recording(state: ProxyTxState, event: ProxyTxInput) -> ProxyTxState:
        taken.append((state, event))
        return proxy_transition(state, event)

    monkeypatch.setattr(parts, "proxy_transition", recording)
    return taken


def _assert_on_table(steps: list[Step]) -> None:
    off = [step for step in steps if step not in PROXY_TX_TABLE]
    assert not off, off


def test_message_call_cancel_and_linger_take_table_transitions(steps: list[Step]) -> None:
    net = Net(3)
    net.converge()
    alice = registered(net, 0, 5070, "alice")
    bob = registered(net, 2, 5072, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(BOB)))
    assert (S.ROUTING, I.SEND_FINAL) in steps                   # REGISTER answered here
    del steps[:]
    alice.message(BOB, "water at sector 4")
    net.run_until(lambda: len(of_kind(net.events(0, 5070), RequestSucceeded)) == 2)
    assert steps == [(S.ROUTING, I.FORWARD)] * 2 + [(S.TRYING, I.RECV_FINAL)] * 2
    del steps[:]
    offer = make_offer(address="127.0.0.1", rtp_port=4000, session_id=1)
    call = alice.invite(BOB, offer)
    net.run_until(lambda: bool(of_kind(net.events(2, 5072), IncomingCall)))
    net.run_until(lambda: bool(of_kind(net.events(0, 5070), CallRinging)))
    incoming = of_kind(net.events(2, 5072), IncomingCall)[0]
    assert incoming.offer is not None
    answer = answer_offer(incoming.offer, address="127.0.0.1", rtp_port=6000, session_id=2)
    assert not isinstance(answer, NotAcceptable)
    bob.answer(incoming.call, answer[0])
    net.run_until(lambda: bool(of_kind(net.events(0, 5070), CallEstablished)))
    assert (S.TRYING, I.RECV_1XX) in steps and (S.PROCEEDING, I.RECV_1XX) in steps
    assert (S.PROCEEDING, I.RECV_FINAL) in steps
    alice.bye(call)
    net.run_until(lambda: bool(of_kind(net.events(2, 5072), CallEnded)))
    ringing = alice.invite(BOB, offer)                          # rings, then CANCEL
    net.run_until(lambda: len(of_kind(net.events(0, 5070), CallRinging)) == 2)
    alice.cancel(ringing)
    net.run_until(lambda: len(of_kind(net.events(0, 5070), CallEnded)) == 2)
    assert (S.PROCEEDING, I.CANCEL) in steps
    gw0 = net.stations[0].gw
    assert all(tx.state is S.COMPLETED for tx in gw0.txs.by_server.values())
    net.run_for(LINGER_S + 1.0)
    assert (S.COMPLETED, I.LINGER_END) in steps
    assert not gw0.txs.by_server and not gw0.txs.by_branch
    _assert_on_table(steps)


def test_a_real_transaction_refuses_an_illegal_step() -> None:
    net = Net(1)
    alice = registered(net, 0, 5070, "alice")
    alice.message(f"sip:nobody@{DOMAIN}", "hello?")
    net.run_until(lambda: bool(of_kind(net.events(0, 5070), RequestFailed)))
    answered = [tx for tx in net.stations[0].gw.txs.by_server.values() if tx.method == "MESSAGE"]
    (tx,) = answered
    assert tx.state is S.COMPLETED and tx.final_status == 404
    with pytest.raises(LocalProtocolError):
        tx.step(I.FORWARD)
    assert tx.state is S.COMPLETED                              # unchanged


def _failures_reach(net: Net, count: int) -> Callable[[], bool]:
    return lambda: len(of_kind(net.events(0, 5070), RequestFailed)) >= count


def test_lingering_transactions_are_evicted_oldest_first(steps: list[Step]) -> None:
    config = GatewayConfig(max_pending_transactions=2)
    net = Net(1, config=config)
    alice = registered(net, 0, 5070, "alice")
    limit = LINGER_FACTOR * config.max_pending_transactions
    for n in range(limit + 3):
        alice.message(f"sip:nobody{n}@{DOMAIN}", "hello?")
        net.run_until(_failures_reach(net, n + 1))
    gw = net.stations[0].gw
    assert len(gw.txs.by_server) <= limit
    assert steps.count((S.COMPLETED, I.EVICT)) == limit + 4 - len(gw.txs.by_server)
    _assert_on_table(steps)


def _raw_message(branch: str) -> bytes:
    """A MESSAGE from raw client alice to bob; the same message id for every branch."""
    return raw_request("MESSAGE", "bob", RAW_ALICE, from_user="alice", branch=branch,
                       call_id="proxy-table-1@alice", cseq=7, body="once only")


def _first_delivery(net: Net) -> SipRequest:
    return next(m for m in received(net, 1, RAW_BOB)
                if isinstance(m, SipRequest) and m.method == "MESSAGE")


def test_held_and_waiting_copies_take_table_transitions(tmp_path: Path,
                                                        steps: list[Step]) -> None:
    """A copy of a message arrives while the first is with bob's client (WAITING); bob's
    client answers the first 480, so the copy of a local client is held (WAITING -> HOLDING)
    and answered 202 once the hold is durable (HOLDING -> COMPLETED)."""
    net = Net(2)
    for i in range(2):
        attach_store_forward(net, i, SF_CONFIG, tmp_path / f"n{i}.sf.sqlite")
    net.converge()
    raw_register(net, 1, RAW_BOB, "bob")
    net.run_until(lambda: bool(net.stations[0].node.table.lookup(BOB)))
    del steps[:]
    net.stations[0].sip.receive_sip(_raw_message("first"), RAW_ALICE, net.now)
    net.run_until(lambda: any(isinstance(m, SipRequest) for m in received(net, 1, RAW_BOB)))
    # the same message from a client of bob's own node, while the first is with bob
    net.stations[1].sip.receive_sip(_raw_message("second"), RAW_CAROL, net.now)
    net.run_for(0.2)
    assert (S.ROUTING, I.WAIT) in steps
    gw1 = net.stations[1].gw
    assert [tx.state for tx in gw1.txs.by_server.values() if tx.method == "MESSAGE"] == [
        S.TRYING, S.WAITING]
    first = _first_delivery(net)
    net.stations[1].sip.receive_sip(build_response(first, 480, to_tag="b1").serialize(),
                                    RAW_BOB, net.now)
    net.run_until(lambda: 202 in statuses(net, 1, RAW_CAROL))
    assert (S.WAITING, I.HOLD) in steps and (S.HOLDING, I.SEND_FINAL) in steps
    request = parse_message_untrusted(_raw_message("x"))
    assert isinstance(request, SipRequest)
    assert gw1._holding.get(message_id(request)) is None        # left HOLDING
    _assert_on_table(steps)
