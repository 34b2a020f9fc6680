"""Small parts of the SIP gateway core: the proxy transaction, per-client rate limiting,
local registrations and the journal record of a SIP message."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from typing import Final

from meshcomm.deadlines import DeadlineHeap
from meshcomm.journal.codec import (
    MAX_CONTAINER_ITEMS,
    MAX_DATA_BYTES,
    normalize_data,
    pack,
    storable_data,
)
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
    EnvelopeSlot,
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
    last_response: SipResponse | None = None
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


#: Room a SIP_MESSAGE record keeps below the journal's MAX_DATA_BYTES for the map's keys
#: and the small fields it adds after the headers were sized (``headers_truncated``).
SIP_RECORD_SLACK_BYTES: Final = 256
#: Worst-case msgpack overhead of one [name, value] pair (array header + two str headers).
_PAIR_OVERHEAD_BYTES: Final = 1 + 2 * 5


def storable_text(text: str) -> str:
    """``text`` as the journal stores it: each code point UTF-8 cannot carry (a byte the
    parser kept with surrogateescape) becomes "?", as :func:`~meshcomm.journal.codec.
    storable_data` does for the record's other fields; ASCII is returned as is."""
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def journal_safe(record: JournalRecord) -> JournalRecord:
    """``record`` with data the journal stores as it is (cheap when all strings are
    ASCII, the usual case; else :func:`~meshcomm.journal.codec.storable_data`)."""
    data = record.data
    if all(not isinstance(v, str) or v.isascii() for v in data.values()):
        return record
    return dataclasses.replace(record, data=storable_data(data))  # the payload stays


def sip_record(direction: Direction, message: SipRequest | SipResponse, peer: Peer, *,
               hops: int = 0, keep_body: bool = False, note: str = "",
               env: bytes | None = None) -> JournalRecord:
    """The SIP_MESSAGE journal record of one message: start line and headers as on the
    wire, body as SHA-256 unless kept, ``env`` the overlay envelope id (hex) when known.
    Always within the journal's MAX_DATA_BYTES (see :func:`_fit_headers`)."""
    body = message.body or None
    wire = message.serialize()
    end = wire.find(b"\r\n")
    start = wire[:end if end >= 0 else len(wire)].decode("utf-8", "replace")
    payload = SipMessageSeen(
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
        note=note or None,
        start=start,
        headers=_without_credentials(message.headers),
        body_len=len(body) if body else None,
        env=env.hex() if env else None)
    return JournalRecord.of(_fit_headers(payload, len(wire)))


#: Header (canonical name) -> the parameter of it that proves knowledge of a password
#: (RFC 3261 §22.4 / RFC 2617 §3.2.2-3): its value is not journaled (it would let anyone
#: holding the journal try passwords offline); the rest of the header is.
CREDENTIAL_PARAMS: Final = {"Authorization": "response", "Proxy-Authorization": "response",
                            "Authentication-Info": "rspauth",
                            "Proxy-Authentication-Info": "rspauth"}
#: What a credential parameter's value is replaced with.
REDACTED: Final = '"redacted"'


_CREDENTIAL_RES: Final = {
    name: re.compile(rf'(\b{param}\s*=\s*)("[^"]*"?|[^,\s]*)', re.IGNORECASE)
    for name, param in CREDENTIAL_PARAMS.items()}


def _without_credentials(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``headers`` with every digest response / rspauth value replaced by REDACTED."""
    if not any(name in CREDENTIAL_PARAMS for name, _ in headers):
        return headers
    return tuple((name, _CREDENTIAL_RES[name].sub(lambda m: m.group(1) + REDACTED, value))
                 if name in _CREDENTIAL_RES else (name, value) for name, value in headers)


def _fit_headers(payload: SipMessageSeen, wire_bytes: int) -> SipMessageSeen:
    """``payload`` with storable header text, cut to fit one journal entry: a kept body
    that leaves no room for every header is stored as its SHA-256 instead (the headers say
    more about what happened), then the first headers that fit are kept and the rest
    counted in ``headers_truncated``. Cheap for an ordinary message (its size bounds the
    record's)."""
    headers = payload.headers or ()
    rough = (wire_bytes + _PAIR_OVERHEAD_BYTES * len(headers) + len(payload.call_id)
             + len(payload.from_aor) + len(payload.to_aor) + SIP_RECORD_SLACK_BYTES)
    if (rough <= MAX_DATA_BYTES and len(headers) <= MAX_CONTAINER_ITEMS
            and all(name.isascii() and value.isascii() for name, value in headers)):
        return payload
    headers = tuple((storable_text(n), storable_text(v)) for n, v in headers)
    base = dataclasses.replace(payload, headers=(), call_id=storable_text(payload.call_id),
                               from_aor=storable_text(payload.from_aor),
                               to_aor=storable_text(payload.to_aor),
                               start=storable_text(payload.start or ""))
    sizes = [len(pack(list(pair))) for pair in headers[:MAX_CONTAINER_ITEMS]]
    room = MAX_DATA_BYTES - SIP_RECORD_SLACK_BYTES - len(normalize_data(base.data())[1])
    if base.body is not None and (sum(sizes) > room or len(sizes) < len(headers)):
        body = base.body           # the headers say more about what happened than the text
        base = dataclasses.replace(base, body=None,
                                   body_sha256=hashlib.sha256(body).hexdigest())
        room = MAX_DATA_BYTES - SIP_RECORD_SLACK_BYTES - len(normalize_data(base.data())[1])
    kept: list[tuple[str, str]] = []
    for pair, size in zip(headers, sizes, strict=False):
        room -= size
        if room < 0:
            break
        kept.append(pair)
    cut = len(headers) - len(kept)
    return dataclasses.replace(base, headers=tuple(kept), headers_truncated=cut or None)


@dataclass(frozen=True, slots=True)
class PendingSipRecord:
    """The SIP_MESSAGE journal record of one message, built when :meth:`record` is called:
    the pump calls it when it hands the journal its records, after the node's datagrams
    went out, so building the record (serialising the message, hashing its body: about
    a quarter of a MESSAGE's handling at its origin) is not on the message's way out. The
    message is immutable; a to-mesh record takes the envelope id the send wrote into
    ``slot``."""

    direction: Direction
    message: SipRequest | SipResponse
    peer: Peer
    hops: int
    keep_body: bool
    note: str
    env: bytes | None
    slot: EnvelopeSlot | None = None

    def record(self) -> JournalRecord:
        env = self.env or (self.slot.env if self.slot is not None else None)
        return journal_safe(sip_record(self.direction, self.message, self.peer,
                                       hops=self.hops, keep_body=self.keep_body,
                                       note=self.note, env=env))


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
