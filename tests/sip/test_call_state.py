"""The call state tables (meshcomm/sip/call_state.py): shape, totality for the inputs the UA
core applies, illegal transitions, and the transitions real two-UA calls take."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import meshcomm.sip.ua_calls as ua_calls
from meshcomm.errors import LocalProtocolError
from meshcomm.sip.call_state import (
    INITIAL_CALL_STATE,
    UAC_CALL_TABLE,
    UAS_CALL_TABLE,
    CallInput,
    CallState,
    CallTable,
    call_allows,
    call_transition,
)
from meshcomm.sip.sdp import make_offer
from meshcomm.sip.ua_events import CallEnded, CallEndReason, EventKind
from tests.sip.test_ua import LOSS_SEEDS, Net, cancel_racing_200, established_call

S, I = CallState, CallInput  # noqa: E741
Step = tuple[bool, CallState, CallInput]
UAC_ONLY_INPUTS = {I.PROVISIONAL, I.SUCCESS, I.FAILURE, I.CANCEL, I.CANCEL_SENT}
UAS_ONLY_INPUTS = {I.ANSWER, I.REJECT, I.ACK, I.ACK_TIMEOUT, I.CANCEL_RECEIVED}


def _reachable(table: CallTable, start: CallState) -> set[CallState]:
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for (src, _), dst in table.items():
            if src is state and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return seen


def _inputs_used_by_ua() -> set[CallInput]:
    """Every ``CallInput.X`` the UA core's source names (what it can apply)."""
    tree = ast.parse(Path(ua_calls.__file__).read_text())
    return {CallInput[node.attr] for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "CallInput"}


@pytest.mark.parametrize("outgoing", [True, False])
def test_table_shape(outgoing: bool) -> None:
    table = UAC_CALL_TABLE if outgoing else UAS_CALL_TABLE
    states = {s for key in table for s in (key[0], table[key])}
    assert states == _reachable(table, INITIAL_CALL_STATE[outgoing])   # no dead states
    assert not [key for key in table if key[0] is S.ENDED]             # ENDED is final
    for state in states - {S.ENDED}:                                   # every call can end
        assert S.ENDED in _reachable(table, state), state
    foreign = UAS_ONLY_INPUTS if outgoing else UAC_ONLY_INPUTS
    assert not [key for key in table if key[1] in foreign]
    if not outgoing:
        assert not states & {S.CALLING, S.CANCEL_PENDING, S.CANCELLING}


def test_table_is_total_for_the_inputs_the_ua_applies() -> None:
    used = _inputs_used_by_ua()
    assert used == set(CallInput)                      # no input the UA never applies
    for event in used:
        sides = [t for t in (UAC_CALL_TABLE, UAS_CALL_TABLE) if any(k[1] is event for k in t)]
        assert sides, f"{event} has no table entry"
    # Every way a live call can end has an entry on its side (§13, §15, §9).
    for state in (S.CALLING, S.EARLY, S.CANCEL_PENDING, S.CANCELLING):
        assert call_transition(True, state, I.FAILURE) is S.ENDED
        assert call_transition(True, state, I.BYE_RECEIVED) is S.ENDED
    for state in (S.EARLY, S.ANSWERED, S.ESTABLISHED):
        assert call_transition(False, state, I.BYE_RECEIVED) is S.ENDED
    for outgoing in (True, False):
        assert call_transition(outgoing, S.ESTABLISHED, I.BYE_SENT) is S.ENDED


@pytest.mark.parametrize(("outgoing", "state", "event"), [
    (True, S.ENDED, I.BYE_RECEIVED),       # a call ends once
    (False, S.ENDED, I.REJECT),
    (True, S.CALLING, I.ANSWER),           # a UAS input on the caller's side
    (False, S.EARLY, I.PROVISIONAL),       # a UAC input on the callee's side
    (True, S.CALLING, I.CANCEL_SENT),      # §9.1: no CANCEL before a provisional response
    (True, S.CALLING, I.BYE_SENT),         # §15: no BYE before the dialog is confirmed
    (True, S.ESTABLISHED, I.CANCEL),       # CANCEL has no effect on an answered INVITE
    (False, S.ESTABLISHED, I.ACK_TIMEOUT),
    (False, S.EARLY, I.ACK),               # an ACK before our 2xx
])
def test_illegal_transition_raises(outgoing: bool, state: CallState, event: CallInput) -> None:
    assert not call_allows(outgoing, state, event)
    with pytest.raises(LocalProtocolError, match=event.value):
        call_transition(outgoing, state, event)


def test_a_real_call_refuses_an_illegal_step() -> None:
    net, alice, bob, call = established_call(1)
    state = alice.ua._calls[call.call_id]
    assert state.state is S.ESTABLISHED and alice.ua.call_state(call) is S.ESTABLISHED
    with pytest.raises(LocalProtocolError):
        state.step(I.PROVISIONAL)
    assert state.state is S.ESTABLISHED                # unchanged by the refused input
    alice.ua.bye(call)
    net.run_until(lambda: bool(bob.of(EventKind.CALL_ENDED)))
    assert alice.ua.call_state(call) is S.ENDED


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[Step]:
    """Record every transition the UA core applies (the real function still decides)."""
    taken: list[Step] = []

    def recording(outgoing: bool, state: CallState, event: CallInput) -> CallState:
        taken.append((outgoing, state, event))
        return call_transition(outgoing, state, event)

    monkeypatch.setattr(ua_calls, "call_transition", recording)
    return taken


@pytest.mark.parametrize("seed", LOSS_SEEDS)
def test_lossy_calls_take_only_table_transitions(seed: int, steps: list[Step]) -> None:
    net, alice, bob, call = established_call(seed)
    alice.ua.bye(call)
    net.run_until(lambda: bool(bob.of(EventKind.CALL_ENDED)))
    net.settle()
    for outgoing, state, event in steps:
        assert call_allows(outgoing, state, event)
    assert (True, S.ESTABLISHED, I.BYE_SENT) in steps
    assert (False, S.EARLY, I.ANSWER) in steps and (False, S.ANSWERED, I.ACK) in steps
    assert (False, S.ESTABLISHED, I.BYE_RECEIVED) in steps
    assert steps.count((True, S.ESTABLISHED, I.BYE_SENT)) == 1   # one end per call


def test_cancel_paths_use_the_cancel_states(steps: list[Step]) -> None:
    net = Net(0.0, 1)
    alice, bob = net.add("alice", 1), net.add("bob", 2)
    offer = make_offer(address="10.0.0.1", rtp_port=4000, session_id=1)
    call = alice.ua.invite("sip:bob@10.0.0.2", offer)
    net.run_until(lambda: bool(alice.of(EventKind.CALL_RINGING)))
    alice.ua.cancel(call)
    net.run_until(lambda: bool(alice.of(EventKind.CALL_ENDED) and bob.of(EventKind.CALL_ENDED)))
    assert [s for s in steps if s[0]] == [
        (True, S.CALLING, I.PROVISIONAL), (True, S.EARLY, I.PROVISIONAL),   # 100, 180
        (True, S.EARLY, I.CANCEL), (True, S.CANCEL_PENDING, I.CANCEL_SENT),
        (True, S.CANCELLING, I.FAILURE)]                                    # 487
    assert [s for s in steps if not s[0]] == [(False, S.EARLY, I.CANCEL_RECEIVED)]
    (ended,) = alice.of(EventKind.CALL_ENDED)
    assert isinstance(ended, CallEnded) and ended.reason is CallEndReason.CANCELLED


def test_cancel_losing_to_200_is_established_then_bye(steps: list[Step]) -> None:
    net = Net(0.0, 1)
    cancel_racing_200(net)
    uac = [s for s in steps if s[0]]
    assert uac[-2:] == [(True, S.CANCELLING, I.SUCCESS), (True, S.ESTABLISHED, I.BYE_SENT)]
    assert (False, S.ANSWERED, I.BYE_RECEIVED) in steps or \
        (False, S.ESTABLISHED, I.BYE_RECEIVED) in steps
