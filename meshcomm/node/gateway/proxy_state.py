"""The lifecycle of the gateway's proxy transaction (:class:`~meshcomm.node.gateway.parts.
ProxyTx`) as one explicit table.

Like the §17 transaction tables in :mod:`meshcomm.sip.transaction` and the call tables in
:mod:`meshcomm.sip.call_state`, the machine is a table ``(state, input) -> next state``
citing the section it implements: RFC 3261 §16 (§16.2 a stateful proxy keeps a server
transaction per request and a client transaction per branch; §16.6 forwarding; §16.7
response processing; §16.8 Timer C; §16.10 CANCEL), with the client side's states borrowed
from §17.1 (Calling/Trying, Proceeding) and the lingering Completed state from §17.2.2
(Timer J: absorb retransmissions of the request). The gateway forwards each request to at
most one branch, so one state covers both sides.

``RESOLVING`` is §16.5's "determine the targets" when the location service is in another
island (issue 10): the request waits for the node's answer. Two more states are the
gateway's own, beside the RFC's: ``HOLDING`` (a MESSAGE handed to
store-and-forward whose 202 waits until the hold is durable) and ``WAITING`` (a copy of a
MESSAGE for a local client that waits for the answer to the first copy: exactly once, end
to end). Which copy is the first (``delivery_id``), the final status, the timers and the
peers are data of the transaction, not states.

:func:`proxy_transition` applies one input; an input with no table entry is a
:class:`LocalProtocolError` (a bug in the gateway). Inputs driven by the network are checked
with :func:`proxy_allows` first, so a peer's message that does not fit the state is
absorbed instead of raising.
"""

from __future__ import annotations

import enum

from meshcomm.errors import LocalProtocolError


class ProxyTxState(enum.Enum):
    ROUTING = "routing"          # server transaction created (§16.2), target being found
    RESOLVING = "resolving"      # the target is being looked up in other islands (§16.5)
    TRYING = "trying"            # forwarded (§16.6), no provisional answer yet (§17.1)
    PROCEEDING = "proceeding"    # a provisional answer came back (§16.7 step 5, §17.1)
    HOLDING = "holding"          # with store-and-forward; the 202 waits for durability
    WAITING = "waiting"          # a copy waiting for the first copy's answer (exactly once)
    COMPLETED = "completed"      # final answer sent; lingers to absorb retransmissions
    TERMINATED = "terminated"    # forgotten


class ProxyTxInput(enum.Enum):
    FORWARD = "forward"              # the request goes to its one branch (§16.6)
    RESOLVE = "resolve"              # no local target: look the AoR up beyond the island
    WAIT = "wait-first-copy"         # a copy parked behind the first copy's delivery
    RECV_1XX = "recv-1xx"            # a provisional answer from the branch (§16.7)
    RECV_FINAL = "recv-final"        # a final answer from the branch, relayed (§16.7)
    SEND_FINAL = "send-final"        # a final answer generated here (§16.7 step 6, §16.8)
    HOLD = "hold"                    # handed to store-and-forward, hold not yet durable
    CANCEL = "recv-cancel"           # CANCEL of the pending INVITE (§16.10)
    LINGER_END = "linger-end"        # LINGER_S ran out (the role of §17.2.2 Timer J)
    EVICT = "evict"                  # dropped early: too many lingering transactions


S, I = ProxyTxState, ProxyTxInput  # noqa: E741 -- table shorthands
ProxyTable = dict[tuple[ProxyTxState, ProxyTxInput], ProxyTxState]

#: RFC 3261 §16 for a proxy with one branch per request, plus store-and-forward custody.
PROXY_TX_TABLE: ProxyTable = {
    (S.ROUTING, I.FORWARD): S.TRYING,              # §16.6: forward to the one target
    (S.ROUTING, I.SEND_FINAL): S.COMPLETED,        # §16.5 (404/480), §10.3, refusals
    (S.ROUTING, I.HOLD): S.HOLDING,                # stopping: a MESSAGE is held at once
    (S.ROUTING, I.WAIT): S.WAITING,                # the same message is with the client
    (S.ROUTING, I.RESOLVE): S.RESOLVING,           # §16.5: the location service is remote
    (S.RESOLVING, I.FORWARD): S.TRYING,            # found: §16.6 as from ROUTING
    (S.RESOLVING, I.SEND_FINAL): S.COMPLETED,      # not found (404), no answer in time (480)
    (S.RESOLVING, I.HOLD): S.HOLDING,              # a MESSAGE's 480 while no uplink runs
    (S.RESOLVING, I.CANCEL): S.RESOLVING,          # §16.10: answered 487 at once
    (S.TRYING, I.RECV_1XX): S.PROCEEDING,          # §16.7 steps 2, 5: Timer C armed
    (S.TRYING, I.RECV_FINAL): S.COMPLETED,         # §16.7 steps 5-9: relayed upstream
    (S.TRYING, I.SEND_FINAL): S.COMPLETED,         # §16.7 step 6: no answer in time (480)
    (S.TRYING, I.HOLD): S.HOLDING,                 # 480/408 or no answer: hold a MESSAGE
    (S.TRYING, I.CANCEL): S.TRYING,                # §16.10: CANCEL the branch, await 487
    (S.PROCEEDING, I.RECV_1XX): S.PROCEEDING,      # §16.7 step 5: relayed (not 100)
    (S.PROCEEDING, I.RECV_FINAL): S.COMPLETED,     # §16.7 steps 5-9
    (S.PROCEEDING, I.SEND_FINAL): S.COMPLETED,     # §16.8: Timer C fired (408)
    (S.PROCEEDING, I.HOLD): S.HOLDING,             # a MESSAGE's 480/408 after a 100
    (S.PROCEEDING, I.CANCEL): S.PROCEEDING,        # §16.10
    (S.HOLDING, I.RECV_1XX): S.HOLDING,            # the branch still answers (node stops)
    (S.HOLDING, I.RECV_FINAL): S.COMPLETED,        # the branch answered after all
    (S.HOLDING, I.SEND_FINAL): S.COMPLETED,        # 202 durable, 500 write failed/no word
    (S.WAITING, I.SEND_FINAL): S.COMPLETED,        # the first copy's answer
    (S.WAITING, I.HOLD): S.HOLDING,                # the first copy got 480: hold this one
    (S.COMPLETED, I.LINGER_END): S.TERMINATED,     # §17.2.2 Timer J
    (S.COMPLETED, I.EVICT): S.TERMINATED,          # bounded: oldest lingering first
}

INITIAL_PROXY_TX_STATE = S.ROUTING
#: A final answer went upstream (or the transaction is gone).
ANSWERED_STATES = frozenset({S.COMPLETED, S.TERMINATED})


def proxy_allows(state: ProxyTxState, event: ProxyTxInput) -> bool:
    """Whether ``event`` has a table entry in ``state``."""
    return (state, event) in PROXY_TX_TABLE


def proxy_transition(state: ProxyTxState, event: ProxyTxInput) -> ProxyTxState:
    """The next state; :class:`LocalProtocolError` when the table has no entry."""
    next_state = PROXY_TX_TABLE.get((state, event))
    if next_state is None:
        raise LocalProtocolError(f"proxy transaction: {event.value} not allowed in "
                                 f"{state.value}")
    return next_state
