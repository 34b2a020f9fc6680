"""The four RFC 3261 §17 transaction state machines, sans-IO.

Each machine is an explicit table ``(state, input) -> Transition`` citing the section it
implements: INVITE client (§17.1.1, Figure 5), non-INVITE client (§17.1.2, Figure 6),
INVITE server (§17.2.1, Figure 7) and non-INVITE server (§17.2.2, Figure 8), with the
"Accepted" states of RFC 6026 §7 for INVITE 2xx handling. Network inputs with no table
entry are absorbed (dropped); TU inputs with no entry are a :class:`LocalProtocolError`.

:class:`TransactionLayer` owns the transactions: it matches responses (§17.1.3) and
requests (§17.2.3, including the RFC 2543 fallback when the branch lacks the magic
cookie), runs Timers A-M from a :class:`~meshcomm.sip.timers.TimerConfig`, queues
datagrams to send and notices for the transaction user (the UA core).

Only unreliable transport (UDP and the mesh) is modelled: retransmission timers always run.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field

from meshcomm.errors import LocalProtocolError
from meshcomm.sip.build import BRANCH_MAGIC_COOKIE, build_ack_for_error
from meshcomm.sip.message import SipRequest, SipResponse
from meshcomm.sip.timers import TimerConfig, TimerName

Address = tuple[str, int]
#: Transactions held at once; more is refused (the UA answers 503).
MAX_TRANSACTIONS = 4096
DEFAULT_SIP_PORT = 5060


class TxKind(enum.Enum):
    INVITE_CLIENT = "invite-client"          # §17.1.1
    NON_INVITE_CLIENT = "non-invite-client"  # §17.1.2
    INVITE_SERVER = "invite-server"          # §17.2.1
    NON_INVITE_SERVER = "non-invite-server"  # §17.2.2


class TxState(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"      # RFC 6026 §7.1 / §7.2
    TERMINATED = "terminated"


class TxInput(enum.Enum):
    RECV_1XX = "recv-1xx"          # client: provisional response arrived
    RECV_2XX = "recv-2xx"          # client: 2xx arrived
    RECV_ERROR = "recv-300-699"    # client: non-2xx final arrived
    RECV_REQUEST = "recv-request"  # server: the request was retransmitted
    RECV_ACK = "recv-ack"          # INVITE server: ACK arrived
    TU_1XX = "tu-1xx"              # server: TU sends a provisional response
    TU_2XX = "tu-2xx"              # server: TU sends a 2xx
    TU_ERROR = "tu-300-699"        # server: TU sends a non-2xx final
    TRANSPORT_ERROR = "transport-error"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"


_TU_INPUTS = frozenset({TxInput.TU_1XX, TxInput.TU_2XX, TxInput.TU_ERROR})
_TIMER_INPUT = {TimerName(i.value): i for i in TxInput if len(i.value) == 1}


class TxAction(enum.Enum):
    SEND_REQUEST = "send-request"       # (re)transmit the request
    SEND_RESPONSE = "send-response"     # (re)transmit the most recent response
    SEND_ACK = "send-ack"               # ACK a non-2xx final (§17.1.1.3)
    PASS_TO_TU = "pass-to-tu"           # hand the message to the TU
    TIMEOUT_TO_TU = "timeout-to-tu"     # inform the TU of a timeout
    ERROR_TO_TU = "error-to-tu"         # inform the TU of a transport error


@dataclass(frozen=True, slots=True)
class Transition:
    """One table entry. ``start`` arms timers at their initial value, ``backoff`` re-arms
    a retransmission timer with its next interval, ``at_t2`` re-arms at T2, ``stop``
    disarms. Entering TERMINATED disarms everything."""

    next_state: TxState
    actions: tuple[TxAction, ...] = ()
    start: tuple[TimerName, ...] = ()
    backoff: tuple[TimerName, ...] = ()
    at_t2: tuple[TimerName, ...] = ()
    stop: tuple[TimerName, ...] = ()


S, I, A, T = TxState, TxInput, TxAction, TimerName  # noqa: E741 -- table shorthands
Table = dict[tuple[TxState, TxInput], Transition]

#: RFC 3261 §17.1.1.2 (Figure 5) with RFC 6026 §7.2 (Accepted state, Timer M).
INVITE_CLIENT_TABLE: Table = {
    (S.CALLING, I.TIMER_A): Transition(S.CALLING, (A.SEND_REQUEST,), backoff=(T.A,)),
    (S.CALLING, I.TIMER_B): Transition(S.TERMINATED, (A.TIMEOUT_TO_TU,)),
    (S.CALLING, I.RECV_1XX): Transition(S.PROCEEDING, (A.PASS_TO_TU,), stop=(T.A, T.B)),
    (S.CALLING, I.RECV_2XX): Transition(S.ACCEPTED, (A.PASS_TO_TU,), start=(T.M,),
                                        stop=(T.A, T.B)),
    (S.CALLING, I.RECV_ERROR): Transition(S.COMPLETED, (A.PASS_TO_TU, A.SEND_ACK),
                                          start=(T.D,), stop=(T.A, T.B)),
    (S.CALLING, I.TRANSPORT_ERROR): Transition(S.TERMINATED, (A.ERROR_TO_TU,)),
    (S.PROCEEDING, I.RECV_1XX): Transition(S.PROCEEDING, (A.PASS_TO_TU,)),
    (S.PROCEEDING, I.RECV_2XX): Transition(S.ACCEPTED, (A.PASS_TO_TU,), start=(T.M,)),
    (S.PROCEEDING, I.RECV_ERROR): Transition(S.COMPLETED, (A.PASS_TO_TU, A.SEND_ACK),
                                             start=(T.D,)),
    (S.COMPLETED, I.RECV_ERROR): Transition(S.COMPLETED, (A.SEND_ACK,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): Transition(S.TERMINATED, (A.ERROR_TO_TU,)),
    (S.COMPLETED, I.TIMER_D): Transition(S.TERMINATED),
    (S.ACCEPTED, I.RECV_2XX): Transition(S.ACCEPTED, (A.PASS_TO_TU,)),
    (S.ACCEPTED, I.TIMER_M): Transition(S.TERMINATED),
}

#: RFC 3261 §17.1.2.2 (Figure 6).
NON_INVITE_CLIENT_TABLE: Table = {
    (S.TRYING, I.TIMER_E): Transition(S.TRYING, (A.SEND_REQUEST,), backoff=(T.E,)),
    (S.TRYING, I.TIMER_F): Transition(S.TERMINATED, (A.TIMEOUT_TO_TU,)),
    (S.TRYING, I.TRANSPORT_ERROR): Transition(S.TERMINATED, (A.ERROR_TO_TU,)),
    (S.TRYING, I.RECV_1XX): Transition(S.PROCEEDING, (A.PASS_TO_TU,)),
    (S.TRYING, I.RECV_2XX): Transition(S.COMPLETED, (A.PASS_TO_TU,), start=(T.K,),
                                       stop=(T.E, T.F)),
    (S.TRYING, I.RECV_ERROR): Transition(S.COMPLETED, (A.PASS_TO_TU,), start=(T.K,),
                                         stop=(T.E, T.F)),
    (S.PROCEEDING, I.TIMER_E): Transition(S.PROCEEDING, (A.SEND_REQUEST,), at_t2=(T.E,)),
    (S.PROCEEDING, I.TIMER_F): Transition(S.TERMINATED, (A.TIMEOUT_TO_TU,)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): Transition(S.TERMINATED, (A.ERROR_TO_TU,)),
    (S.PROCEEDING, I.RECV_1XX): Transition(S.PROCEEDING, (A.PASS_TO_TU,)),
    (S.PROCEEDING, I.RECV_2XX): Transition(S.COMPLETED, (A.PASS_TO_TU,), start=(T.K,),
                                           stop=(T.E, T.F)),
    (S.PROCEEDING, I.RECV_ERROR): Transition(S.COMPLETED, (A.PASS_TO_TU,), start=(T.K,),
                                             stop=(T.E, T.F)),
    (S.COMPLETED, I.TIMER_K): Transition(S.TERMINATED),
}

#: RFC 3261 §17.2.1 (Figure 7) with RFC 6026 §7.1 (Accepted state, Timer L).
INVITE_SERVER_TABLE: Table = {
    (S.PROCEEDING, I.RECV_REQUEST): Transition(S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_1XX): Transition(S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_2XX): Transition(S.ACCEPTED, (A.SEND_RESPONSE,), start=(T.L,)),
    (S.PROCEEDING, I.TU_ERROR): Transition(S.COMPLETED, (A.SEND_RESPONSE,),
                                           start=(T.G, T.H)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): Transition(S.TERMINATED, (A.ERROR_TO_TU,)),
    (S.COMPLETED, I.RECV_REQUEST): Transition(S.COMPLETED, (A.SEND_RESPONSE,)),
    (S.COMPLETED, I.TIMER_G): Transition(S.COMPLETED, (A.SEND_RESPONSE,), backoff=(T.G,)),
    (S.COMPLETED, I.TIMER_H): Transition(S.TERMINATED, (A.TIMEOUT_TO_TU,)),
    (S.COMPLETED, I.RECV_ACK): Transition(S.CONFIRMED, start=(T.I,), stop=(T.G, T.H)),
    (S.COMPLETED, I.TRANSPORT_ERROR): Transition(S.TERMINATED, (A.ERROR_TO_TU,)),
    (S.CONFIRMED, I.RECV_ACK): Transition(S.CONFIRMED),
    (S.CONFIRMED, I.TIMER_I): Transition(S.TERMINATED),
    (S.ACCEPTED, I.RECV_REQUEST): Transition(S.ACCEPTED),
    (S.ACCEPTED, I.RECV_ACK): Transition(S.ACCEPTED, (A.PASS_TO_TU,)),
    (S.ACCEPTED, I.TU_2XX): Transition(S.ACCEPTED, (A.SEND_RESPONSE,)),
    (S.ACCEPTED, I.TIMER_L): Transition(S.TERMINATED),
}

#: RFC 3261 §17.2.2 (Figure 8).
NON_INVITE_SERVER_TABLE: Table = {
    (S.TRYING, I.RECV_REQUEST): Transition(S.TRYING),
    (S.TRYING, I.TU_1XX): Transition(S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.TRYING, I.TU_2XX): Transition(S.COMPLETED, (A.SEND_RESPONSE,), start=(T.J,)),
    (S.TRYING, I.TU_ERROR): Transition(S.COMPLETED, (A.SEND_RESPONSE,), start=(T.J,)),
    (S.PROCEEDING, I.RECV_REQUEST): Transition(S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_1XX): Transition(S.PROCEEDING, (A.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TU_2XX): Transition(S.COMPLETED, (A.SEND_RESPONSE,), start=(T.J,)),
    (S.PROCEEDING, I.TU_ERROR): Transition(S.COMPLETED, (A.SEND_RESPONSE,), start=(T.J,)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): Transition(S.TERMINATED, (A.ERROR_TO_TU,)),
    (S.COMPLETED, I.RECV_REQUEST): Transition(S.COMPLETED, (A.SEND_RESPONSE,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): Transition(S.TERMINATED, (A.ERROR_TO_TU,)),
    (S.COMPLETED, I.TIMER_J): Transition(S.TERMINATED),
}

TABLES: dict[TxKind, Table] = {
    TxKind.INVITE_CLIENT: INVITE_CLIENT_TABLE,
    TxKind.NON_INVITE_CLIENT: NON_INVITE_CLIENT_TABLE,
    TxKind.INVITE_SERVER: INVITE_SERVER_TABLE,
    TxKind.NON_INVITE_SERVER: NON_INVITE_SERVER_TABLE,
}

#: Initial state and the timers armed when the transaction starts.
_INITIAL: dict[TxKind, tuple[TxState, tuple[TimerName, ...]]] = {
    TxKind.INVITE_CLIENT: (S.CALLING, (T.A, T.B)),          # §17.1.1.2
    TxKind.NON_INVITE_CLIENT: (S.TRYING, (T.E, T.F)),       # §17.1.2.2
    TxKind.INVITE_SERVER: (S.PROCEEDING, ()),               # §17.2.1
    TxKind.NON_INVITE_SERVER: (S.TRYING, ()),               # §17.2.2
}


class NoticeKind(enum.Enum):
    RESPONSE = "response"            # client: a response for the TU
    ACK = "ack"                      # INVITE server (Accepted): an ACK for the TU
    TIMEOUT = "timeout"              # Timer B/F/H fired
    TRANSPORT_ERROR = "transport-error"


@dataclass(frozen=True, slots=True)
class TxNotice:
    """Something the transaction tells its TU."""

    kind: NoticeKind
    tx: Transaction
    message: SipResponse | SipRequest | None = None


# ---------------------------------------------------------------------------- matching
def _sent_by(request: SipRequest) -> str:
    via = request.top_via
    return f"{via.host}:{via.port or DEFAULT_SIP_PORT}"


def client_key(branch: str, method: str) -> tuple[str, ...]:
    """§17.1.3: a response matches by top-Via branch and CSeq method."""
    return ("client", branch, "INVITE" if method == "ACK" else method)


def response_key(response: SipResponse) -> tuple[str, ...] | None:
    branch = response.top_via.branch
    return None if branch is None else client_key(branch, response.cseq.method)


def server_key(request: SipRequest, method: str | None = None) -> tuple[str, ...]:
    """§17.2.3 matching key. ACK maps to the INVITE it acknowledges; ``method`` overrides
    the request's method (CANCEL looks up the INVITE it cancels, §9.2).

    With the magic cookie: branch, sent-by and method. Without it (RFC 2543 peers):
    Request-URI, From tag, Call-ID, CSeq number and top Via; the To tag is checked
    separately by :meth:`TransactionLayer.match_request` (it differs between an INVITE
    and the ACK of its non-2xx response).
    """
    name = method or request.method
    name = "INVITE" if name == "ACK" else name
    branch = request.top_via.branch or ""
    if branch.startswith(BRANCH_MAGIC_COOKIE):
        return ("server", branch, _sent_by(request), name)
    return ("server-2543", str(request.uri), request.from_addr.tag or "", request.call_id,
            str(request.cseq.number), str(request.top_via), name)


# ------------------------------------------------------------------------ transactions
@dataclass(eq=False, slots=True)
class Transaction:
    """One transaction. Mutable state, owned by :class:`TransactionLayer`."""

    tx_id: int
    kind: TxKind
    key: tuple[str, ...]
    request: SipRequest
    peer: Address                    # where requests (client) or responses (server) go
    state: TxState
    request_bytes: bytes = b""
    last_response: SipResponse | None = None
    ack_bytes: bytes | None = None
    deadlines_s: dict[TimerName, float] = field(default_factory=dict)
    intervals_s: dict[TimerName, float] = field(default_factory=dict)

    @property
    def is_client(self) -> bool:
        return self.kind in (TxKind.INVITE_CLIENT, TxKind.NON_INVITE_CLIENT)

    @property
    def terminated(self) -> bool:
        return self.state is TxState.TERMINATED

    def next_deadline_s(self) -> float | None:
        return min(self.deadlines_s.values(), default=None)


def _response_input(status: int, *, from_tu: bool) -> TxInput:
    if status < 200:
        return TxInput.TU_1XX if from_tu else TxInput.RECV_1XX
    if status < 300:
        return TxInput.TU_2XX if from_tu else TxInput.RECV_2XX
    return TxInput.TU_ERROR if from_tu else TxInput.RECV_ERROR


class TransactionLayer:
    """All transactions of one UA core; sans-IO (time comes in as ``now``)."""

    def __init__(self, timers: TimerConfig | None = None) -> None:
        self.timers = timers or TimerConfig()
        self._by_key: dict[tuple[str, ...], Transaction] = {}
        self._ids = itertools.count(1)
        self._outgoing: deque[tuple[bytes, Address]] = deque()
        self._notices: deque[TxNotice] = deque()
        self.absorbed_count = 0
        #: (deadline, tx id, arm number, key, timer) of every timer armed; an entry whose
        #: transaction is gone or whose timer was stopped or re-armed since is stale and
        #: dropped when it reaches the top (so next_timer and on_timer cost O(log n) per
        #: timer, not a walk over every transaction: a flood of requests to the UA
        #: leaves up to MAX_TRANSACTIONS of them waiting for Timer J)
        self._heap: list[tuple[float, int, int, tuple[str, ...], TimerName]] = []
        self._armed = itertools.count()

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._by_key)

    def enqueue(self, data: bytes, dest: Address) -> None:
        """Queue a datagram the TU sends outside any transaction (ACK for 2xx, 2xx
        retransmissions), in order with the transactions' own datagrams."""
        self._outgoing.append((data, dest))

    def take_outgoing(self) -> list[tuple[bytes, Address]]:
        out = list(self._outgoing)
        self._outgoing.clear()
        return out

    def next_notice(self) -> TxNotice | None:
        return self._notices.popleft() if self._notices else None

    def next_timer(self) -> float | None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _live(self, entry: tuple[float, int, int, tuple[str, ...], TimerName]) -> bool:
        deadline, tx_id, _, key, timer = entry
        tx = self._by_key.get(key)
        return tx is not None and tx.tx_id == tx_id and tx.deadlines_s.get(timer) == deadline

    def find(self, key: tuple[str, ...]) -> Transaction | None:
        return self._by_key.get(key)

    # --------------------------------------------------------------- creation
    def start_client(self, request: SipRequest, peer: Address, now: float) -> Transaction:
        """Create a client transaction for ``request`` and transmit it (§17.1.1.2/17.1.2.2)."""
        if request.method == "ACK":
            raise LocalProtocolError("ACK is not sent in a client transaction (§17.1)")
        branch = request.top_via.branch
        if branch is None or not branch.startswith(BRANCH_MAGIC_COOKIE):
            raise LocalProtocolError("client requests need an RFC 3261 branch (§8.1.1.7)")
        kind = TxKind.INVITE_CLIENT if request.method == "INVITE" else TxKind.NON_INVITE_CLIENT
        tx = self._create(kind, client_key(branch, request.method), request, peer, now)
        tx.request_bytes = request.serialize()
        self._outgoing.append((tx.request_bytes, peer))
        return tx

    def start_server(self, request: SipRequest, peer: Address, now: float) -> Transaction:
        """Create a server transaction for a new request (not ACK), §17.2."""
        if request.method == "ACK":
            raise LocalProtocolError("ACK does not create a server transaction (§17.2.3)")
        kind = TxKind.INVITE_SERVER if request.method == "INVITE" else TxKind.NON_INVITE_SERVER
        return self._create(kind, server_key(request), request, peer, now)

    def _create(self, kind: TxKind, key: tuple[str, ...], request: SipRequest, peer: Address,
                now: float) -> Transaction:
        if key in self._by_key:
            raise LocalProtocolError(f"transaction {key} already exists")
        if len(self._by_key) >= MAX_TRANSACTIONS:
            raise LocalProtocolError("transaction table full")
        state, timers = _INITIAL[kind]
        tx = Transaction(next(self._ids), kind, key, request, peer, state)
        self._by_key[key] = tx          # (before arming: a compaction keeps live entries)
        for timer in timers:
            self._arm(tx, timer, self.timers.duration_s(timer), now)
        return tx

    # ------------------------------------------------------------------ inputs
    def on_response(self, response: SipResponse, now: float) -> bool:
        """Feed a response (§17.1.3). False when no client transaction matches."""
        key = response_key(response)
        tx = None if key is None else self._by_key.get(key)
        if tx is None:
            return False
        self._apply(tx, _response_input(response.status, from_tu=False), now, response)
        return True

    def match_request(self, request: SipRequest) -> Transaction | None:
        """The server transaction ``request`` belongs to (§17.2.3), or None."""
        tx = self._by_key.get(server_key(request))
        if tx is None or tx.is_client:
            return None
        if tx.key[0] == "server-2543":
            if request.method == "ACK":
                sent = tx.last_response
                if sent is None or request.to_addr.tag != sent.to_addr.tag:
                    return None
            elif request.to_addr.tag != tx.request.to_addr.tag:
                return None
        return tx

    def on_request(self, request: SipRequest, now: float) -> bool:
        """Feed a request; True when an existing server transaction absorbed it."""
        tx = self.match_request(request)
        if tx is None:
            return False
        event = TxInput.RECV_ACK if request.method == "ACK" else TxInput.RECV_REQUEST
        self._apply(tx, event, now, request)
        self.absorbed_count += 1
        return True

    def respond(self, tx: Transaction, response: SipResponse, now: float) -> None:
        """The TU sends ``response`` through server transaction ``tx`` (§17.2)."""
        if tx.is_client:
            raise LocalProtocolError("responses go through server transactions")
        event = _response_input(response.status, from_tu=True)
        if (tx.state, event) not in TABLES[tx.kind]:
            raise LocalProtocolError(
                f"{tx.kind.value} in state {tx.state.value} cannot send {response.status}")
        tx.last_response = response
        self._apply(tx, event, now, response)

    def transport_error(self, tx: Transaction, now: float) -> None:
        self._apply(tx, TxInput.TRANSPORT_ERROR, now, None)

    def on_timer(self, now: float) -> None:
        """Fire every timer due at ``now`` (in deadline order, then transaction age)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._live(entry):
                continue
            tx, timer = self._by_key[entry[3]], entry[4]
            del tx.deadlines_s[timer]
            self._apply(tx, _TIMER_INPUT[timer], now, None)

    # ---------------------------------------------------------------- machinery
    def _arm(self, tx: Transaction, timer: TimerName, interval_s: float, now: float) -> None:
        tx.intervals_s[timer] = interval_s
        deadline = tx.deadlines_s[timer] = now + interval_s
        heap = self._heap
        heapq.heappush(heap, (deadline, tx.tx_id, next(self._armed), tx.key, timer))
        if len(heap) > 4 * MAX_TRANSACTIONS:     # stale entries: keep the live ones
            heap[:] = [e for e in heap if self._live(e)]
            heapq.heapify(heap)

    def _apply(self, tx: Transaction, event: TxInput,  now: float,
               message: SipRequest | SipResponse | None) -> None:
        transition = TABLES[tx.kind].get((tx.state, event))
        if transition is None:
            if event in _TU_INPUTS:
                raise LocalProtocolError(f"{event.value} not allowed in {tx.state.value}")
            return   # a network input the machine ignores: absorbed
        tx.state = transition.next_state
        for timer in transition.stop:
            tx.deadlines_s.pop(timer, None)
        for timer in transition.start:
            self._arm(tx, timer, self.timers.duration_s(timer), now)
        for timer in transition.backoff:
            interval = self.timers.next_retransmit_interval_s(timer, tx.intervals_s[timer])
            self._arm(tx, timer, interval, now)
        for timer in transition.at_t2:
            self._arm(tx, timer, self.timers.t2_s, now)
        for action in transition.actions:
            _ACTIONS[action](self, tx, message)
        if tx.state is TxState.TERMINATED:
            tx.deadlines_s.clear()
            self._by_key.pop(tx.key, None)

    def _send_request(self, tx: Transaction, _message: SipRequest | SipResponse | None) -> None:
        self._outgoing.append((tx.request_bytes, tx.peer))

    def _send_response(self, tx: Transaction, _message: SipRequest | SipResponse | None) -> None:
        if tx.last_response is not None:
            self._outgoing.append((tx.last_response.serialize(), tx.peer))

    def _send_ack(self, tx: Transaction, message: SipRequest | SipResponse | None) -> None:
        if tx.ack_bytes is None and isinstance(message, SipResponse):
            tx.ack_bytes = build_ack_for_error(tx.request, message).serialize()
        if tx.ack_bytes is not None:
            self._outgoing.append((tx.ack_bytes, tx.peer))

    def _pass_to_tu(self, tx: Transaction, message: SipRequest | SipResponse | None) -> None:
        kind = NoticeKind.ACK if isinstance(message, SipRequest) else NoticeKind.RESPONSE
        self._notices.append(TxNotice(kind, tx, message))

    def _timeout(self, tx: Transaction, _message: SipRequest | SipResponse | None) -> None:
        self._notices.append(TxNotice(NoticeKind.TIMEOUT, tx))

    def _error(self, tx: Transaction, _message: SipRequest | SipResponse | None) -> None:
        self._notices.append(TxNotice(NoticeKind.TRANSPORT_ERROR, tx))


_ACTIONS = {
    TxAction.SEND_REQUEST: TransactionLayer._send_request,
    TxAction.SEND_RESPONSE: TransactionLayer._send_response,
    TxAction.SEND_ACK: TransactionLayer._send_ack,
    TxAction.PASS_TO_TU: TransactionLayer._pass_to_tu,
    TxAction.TIMEOUT_TO_TU: TransactionLayer._timeout,
    TxAction.ERROR_TO_TU: TransactionLayer._error,
}
