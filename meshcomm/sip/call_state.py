"""The call state machine of the user-agent core, as two explicit tables.

Like the §17 transaction tables in :mod:`meshcomm.sip.transaction`, each machine is a
table ``(state, input) -> next state`` citing the section it implements: the caller's side
(UAC: RFC 3261 §13.2 INVITE, §9.1 CANCEL, §12.1.2/§12.2.1 dialogs, §15 BYE) and the
callee's side (UAS: §13.3 INVITE, §9.2 CANCEL, §12.1.1 dialogs, §15 BYE). The table is
chosen by the call's direction (``Call.outgoing``), which is data of the call, not a state.

:func:`call_transition` applies one input; an input with no table entry is a
:class:`LocalProtocolError` (a bug in the UA core). Network-driven inputs are checked with
:func:`call_allows` first, so that a peer's message that does not fit the state is ignored
instead of raising.
"""

from __future__ import annotations

import enum

from meshcomm.errors import LocalProtocolError


class CallState(enum.Enum):
    CALLING = "calling"                # UAC: INVITE sent, no provisional response yet
    EARLY = "early"                    # UAC: 1xx received; UAS: offered to the application
    CANCEL_PENDING = "cancel-pending"  # UAC: CANCEL wanted, held until a 1xx (§9.1)
    CANCELLING = "cancelling"          # UAC: CANCEL sent, waiting for the INVITE's final
    ANSWERED = "answered"              # UAS: 2xx sent, waiting for the ACK
    ESTABLISHED = "established"
    ENDED = "ended"


class CallInput(enum.Enum):
    PROVISIONAL = "recv-1xx"          # UAC: a provisional response to the INVITE
    SUCCESS = "recv-2xx"              # UAC: the first 2xx to the INVITE (not a retransmit)
    FAILURE = "recv-final-error"      # UAC: a 3xx-6xx final, or Timer B / transport error
    CANCEL = "tu-cancel"              # UAC: the application hangs up before an answer
    CANCEL_SENT = "cancel-sent"       # UAC: the CANCEL request went out
    ANSWER = "tu-answer"              # UAS: the application answers (2xx sent)
    REJECT = "tu-reject"              # UAS: a 3xx-6xx final sent (reject, Timer C 480)
    ACK = "recv-ack"                  # UAS: the ACK for our 2xx
    ACK_TIMEOUT = "ack-timeout"       # UAS: no ACK for 64*T1
    CANCEL_RECEIVED = "recv-cancel"   # UAS: CANCEL for the pending INVITE
    BYE_SENT = "bye-sent"             # either: we end the dialog with BYE
    BYE_RECEIVED = "recv-bye"         # either: the peer ends the dialog with BYE


S, I = CallState, CallInput  # noqa: E741 -- table shorthands
CallTable = dict[tuple[CallState, CallInput], CallState]

#: The caller's side: RFC 3261 §13.2.2 (responses to the INVITE), §9.1 (CANCEL only after
#: a provisional response; a 2xx that wins the race is ACKed and ended with BYE),
#: §12.1.2 (1xx with a To tag creates the early dialog, 2xx confirms it), §15 (BYE).
UAC_CALL_TABLE: CallTable = {
    (S.CALLING, I.PROVISIONAL): S.EARLY,                   # §13.2.2.1
    (S.CALLING, I.SUCCESS): S.ESTABLISHED,                 # §13.2.2.4
    (S.CALLING, I.FAILURE): S.ENDED,                       # §13.2.2.2-3, §17.1.1.2 Timer B
    (S.CALLING, I.CANCEL): S.CANCEL_PENDING,               # §9.1: no CANCEL before a 1xx
    (S.CALLING, I.BYE_RECEIVED): S.ENDED,                  # §15: the peer ends the dialog
    (S.EARLY, I.PROVISIONAL): S.EARLY,                     # §13.2.2.1
    (S.EARLY, I.SUCCESS): S.ESTABLISHED,                   # §13.2.2.4
    (S.EARLY, I.FAILURE): S.ENDED,                         # §13.2.2.2-3
    (S.EARLY, I.CANCEL): S.CANCEL_PENDING,                 # §9.1
    (S.EARLY, I.BYE_RECEIVED): S.ENDED,                    # §15: BYE in the early dialog
    (S.CANCEL_PENDING, I.CANCEL): S.CANCEL_PENDING,        # §9.1: still waiting for a 1xx
    (S.CANCEL_PENDING, I.CANCEL_SENT): S.CANCELLING,       # §9.1
    (S.CANCEL_PENDING, I.SUCCESS): S.ESTABLISHED,          # §9.1: the 2xx won; then BYE
    (S.CANCEL_PENDING, I.FAILURE): S.ENDED,                # §9.1, §13.2.2.3
    (S.CANCEL_PENDING, I.BYE_RECEIVED): S.ENDED,           # §15
    (S.CANCELLING, I.PROVISIONAL): S.CANCELLING,           # §13.2.2.1
    (S.CANCELLING, I.SUCCESS): S.ESTABLISHED,              # §9.1: the 2xx won; then BYE
    (S.CANCELLING, I.FAILURE): S.ENDED,                    # §9.1: 487 to the INVITE
    (S.CANCELLING, I.BYE_RECEIVED): S.ENDED,               # §15
    (S.ESTABLISHED, I.BYE_SENT): S.ENDED,                  # §15.1.1
    (S.ESTABLISHED, I.BYE_RECEIVED): S.ENDED,              # §15.1.2
}

#: The callee's side: RFC 3261 §13.3.1 (processing the INVITE: §13.3.1.3 rejecting,
#: §13.3.1.4 accepting, the 2xx retransmitted until the ACK, BYE after 64*T1 without one),
#: §9.2 (CANCEL of the pending INVITE: 487), §12.1.1 (the dialog), §15 (BYE).
UAS_CALL_TABLE: CallTable = {
    (S.EARLY, I.ANSWER): S.ANSWERED,                       # §13.3.1.4
    (S.EARLY, I.REJECT): S.ENDED,                          # §13.3.1.3
    (S.EARLY, I.CANCEL_RECEIVED): S.ENDED,                 # §9.2
    (S.EARLY, I.BYE_RECEIVED): S.ENDED,                    # §15.1.2: 487 to the INVITE
    (S.ANSWERED, I.ACK): S.ESTABLISHED,                    # §13.3.1.4
    (S.ANSWERED, I.ACK_TIMEOUT): S.ENDED,                  # §13.3.1.4: confirm, then BYE
    (S.ANSWERED, I.BYE_SENT): S.ENDED,                     # §15: BYE before the ACK
    (S.ANSWERED, I.BYE_RECEIVED): S.ENDED,                 # §15.1.2
    (S.ESTABLISHED, I.BYE_SENT): S.ENDED,                  # §15.1.1
    (S.ESTABLISHED, I.BYE_RECEIVED): S.ENDED,              # §15.1.2
}

#: Where a call starts: the caller after sending the INVITE, the callee on receiving it.
INITIAL_CALL_STATE = {True: S.CALLING, False: S.EARLY}


def call_table(outgoing: bool) -> CallTable:
    return UAC_CALL_TABLE if outgoing else UAS_CALL_TABLE


def call_allows(outgoing: bool, state: CallState, event: CallInput) -> bool:
    """Whether ``event`` has a table entry in ``state``."""
    return (state, event) in call_table(outgoing)


def call_transition(outgoing: bool, state: CallState, event: CallInput) -> CallState:
    """The next state; :class:`LocalProtocolError` when the table has no entry."""
    next_state = call_table(outgoing).get((state, event))
    if next_state is None:
        side = "UAC" if outgoing else "UAS"
        raise LocalProtocolError(f"{side} call: {event.value} not allowed in {state.value}")
    return next_state
