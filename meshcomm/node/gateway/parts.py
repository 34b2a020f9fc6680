"""Small parts of the SIP gateway core: the proxy transaction, per-client rate limiting,
local registrations and the journal record of a SIP message."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from meshcomm.deadlines import DeadlineHeap
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import SipMessageDropped, SipMessageSeen
from meshcomm.node.gateway.proxy_state import (
    ANSWERED_STATES,
    INITIAL_PROXY_TX_STATE,
    ProxyTxInput,
    ProxyTxState,
    proxy_allows,
    proxy_transition,
)
from meshcomm.node.gateway.types import (
    BUILTIN_ADDR,
    DEFAULT_EXPIRES_S,
    MAX_EXPIRES_S,
    TCP_HOST_PREFIX,
    Address,
    Direction,
    SdpDirection,
)
from meshcomm.sip.message import SipRequest, SipResponse
from meshcomm.sip.transaction import DEFAULT_SIP_PORT
from meshcomm.sip.uri import SipUri

#: Where a message comes from or goes to: a local address, a node id (mesh), or None for
#: the store-and-forward hand-off (a held MESSAGE being delivered).
Peer = Address | bytes | None


def is_tcp(addr: Address) -> bool:
    return addr[0].startswith(TCP_HOST_PREFIX)


def peer_text(peer: Peer) -> str:
    if peer is None:
        return "store"
    if isinstance(peer, bytes):
        return peer[:8].hex() + ".mesh"
    return f"{peer[0]}:{peer[1]}"


def contact_key(uri: SipUri) -> tuple[str, int]:
    return (uri.host.lower(), uri.port or DEFAULT_SIP_PORT)


@dataclass(eq=False, slots=True)
class ProxyTx:
    """One forwarded (or locally answered) request: RFC 3261 §16 stateful proxy, one
    server side toward ``upstream`` and at most one client side toward ``downstream``.
    Its lifecycle is :data:`~meshcomm.node.gateway.proxy_state.PROXY_TX_TABLE`, applied
    by :meth:`step`; the other fields are data."""

    tx_id: int
    server_key: tuple[str, ...]
    request: SipRequest          # as received (Via stamped)
    upstream: Peer
    state: ProxyTxState = INITIAL_PROXY_TX_STATE
    branch: str = ""
    downstream: Peer = None
    out_request: SipRequest | None = None
    out_bytes: bytes = b""
    #: The status of the final answer sent upstream (set on entering COMPLETED).
    final_status: int | None = None
    last_response: bytes | None = None
    #: :attr:`deadline` and :attr:`retransmit_at` (properties: setting one re-arms
    #: :attr:`timers`, the owning table's heap).
    _deadline: float | None = field(default=None, init=False)
    _retransmit_at: float | None = field(default=None, init=False)
    retransmit_interval_s: float = 0.0
    msg_id: bytes | None = None
    #: A held MESSAGE the holder sent beyond the island (``deliver_remote``): its final
    #: answer goes to ``holder.remote_delivery_done``.
    remote_delivery: bool = False
    hops: int = 0
    #: A MESSAGE being delivered to a local client: its message_id and origin node
    #: (b"" local); copies that arrive meanwhile wait here for its answer.
    delivery_id: bytes | None = None
    delivery_origin: bytes = b""
    followers: list[ProxyTx] = field(default_factory=list)
    #: The heap of the table that holds this transaction (None: in no table).
    timers: DeadlineHeap[ProxyTx] | None = field(default=None, repr=False)
    #: Position in the table (firing order of timers due together), see ProxyTxTable.
    order: int = 0

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def answered(self) -> bool:
        """A final answer went upstream (COMPLETED, or forgotten since)."""
        return self.state in ANSWERED_STATES

    def allows(self, event: ProxyTxInput) -> bool:
        return proxy_allows(self.state, event)

    def step(self, event: ProxyTxInput) -> None:
        """Apply ``event``; LocalProtocolError when the table has no entry."""
        self.state = proxy_transition(self.state, event)

    @property
    def deadline(self) -> float | None:
        """When the state's timer fires: TRYING/PROCEEDING no answer (480/408, Timer C
        once ringing), HOLDING no word on durability (500), COMPLETED the end of
        lingering."""
        return self._deadline

    @deadline.setter
    def deadline(self, when: float | None) -> None:
        self._deadline = when
        self.rearm()

    @property
    def retransmit_at(self) -> float | None:
        """Request retransmission toward a local UDP client (T1 doubling); None once a
        provisional or final answer came back."""
        return self._retransmit_at

    @retransmit_at.setter
    def retransmit_at(self, when: float | None) -> None:
        self._retransmit_at = when
        self.rearm()

    def next_deadline(self) -> float | None:
        deadline, retransmit = self._deadline, self._retransmit_at
        if deadline is None or (retransmit is not None and retransmit < deadline):
            return retransmit
        return deadline

    def rearm(self) -> None:
        """Put :meth:`next_deadline` on the table's heap (a no-op when unchanged)."""
        if self.timers is not None:
            self.timers.schedule(self, self.next_deadline())


@dataclass(slots=True)
class TokenBucket:
    """Per-client request budget (tokens refill at ``rate_per_s`` up to ``burst``)."""

    tokens: float
    updated_at: float

    def take(self, now: float, rate_per_s: float, burst: int) -> bool:
        self.tokens = min(float(burst), self.tokens + (now - self.updated_at) * rate_per_s)
        self.updated_at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass(slots=True)
class LocalRegistration:
    """A local client registered for ``aor`` (§10.3) at ``contact``, reached at ``peer``;
    ``source`` is where its REGISTER came from (the registrar's quotas count by it),
    ``since`` when the AoR was first registered, ``used`` whether any request other than
    REGISTER came from its source or was routed to it (unused ones are evicted first);
    ``position`` orders the registrations as the registrar's table does (a refresh keeps
    it), the order in which those that expire together are removed."""

    aor: str
    contact: SipUri
    peer: Address
    expires_at: float
    announced: bool = field(default=False)
    source: Address = ("", 0)
    since: float = 0.0
    used: bool = False
    position: int = 0


def message_id(request: SipRequest) -> bytes:
    """Stable id of a MESSAGE for store-and-forward (same for every retransmission)."""
    text = f"{request.call_id}\x00{request.from_addr.tag or ''}\x00{request.cseq.number}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()[:16]


def sip_record(direction: Direction, message: SipRequest | SipResponse, peer: Peer, *,
               hops: int = 0, keep_body: bool = False, note: str = "") -> JournalRecord:
    """The SIP_MESSAGE journal record of one message (body as SHA-256 unless kept)."""
    body = message.body or None
    return JournalRecord.of(SipMessageSeen(
        direction=direction.value,
        method=message.method if isinstance(message, SipRequest) else message.cseq.method,
        status=None if isinstance(message, SipRequest) else message.status,
        call_id=message.call_id,
        cseq=message.cseq.number,
        from_aor=message.from_addr.uri.aor,
        to_aor=message.to_addr.uri.aor,
        peer=peer_text(peer),
        hops=hops,
        body=body if keep_body else None,
        body_sha256=hashlib.sha256(body).hexdigest() if body and not keep_body else None,
        note=note or None))


def drop_record(reason: str, peer: Peer, size_bytes: int, hops: int = 0) -> JournalRecord:
    return JournalRecord.of(SipMessageDropped(direction=Direction.DROPPED.value, reason=reason,
                                              peer=peer_text(peer), size=size_bytes, hops=hops))


def expires_of(request: SipRequest) -> int:
    """§10.3 step 6: the expiry a REGISTER asks for (Contact param, else Expires)."""
    value: int | None = None
    if request.contacts:
        raw = request.contacts[0].param("expires")
        if raw is not None and raw.isdigit():
            value = int(raw)
    if value is None:
        value = request.expires
    return min(MAX_EXPIRES_S, DEFAULT_EXPIRES_S if value is None else value)


def sdp_direction(message: SipRequest | SipResponse, src: Peer,
                  dest: Peer) -> SdpDirection | None:
    """Which way an SDP body crosses between a local client and the mesh (None: it does
    not, e.g. mesh to mesh on a relay node or to the built-in UA, or there is no SDP)."""
    ctype = (message.content_type or "").split(";")[0].strip().lower()
    if not message.body or ctype != "application/sdp":
        return None
    if isinstance(src, tuple) and src != BUILTIN_ADDR and isinstance(dest, bytes):
        return SdpDirection.CLIENT_TO_MESH
    if isinstance(src, bytes) and isinstance(dest, tuple) and dest != BUILTIN_ADDR:
        return SdpDirection.MESH_TO_CLIENT
    return None
