"""Types of the local SIP gateway core (:mod:`meshcomm.node.gateway.core`): addresses, outputs,
events, limits, configuration and the store-and-forward hand-off.

Addresses are ``(host, port)`` tuples as in the SIP core. Local clients reached over UDP use
their real address; a TCP connection is named ``("tcp#<conn id>", port)`` by the edge; the
gateway's own built-in user agent is :data:`BUILTIN_ADDR`. Mesh peers are not addresses:
they are node ids, and traffic to them is a :class:`MeshSip`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from meshcomm.errors import ConfigError, LocalProtocolError
from meshcomm.media.relay import SdpPath
from meshcomm.overlay.forwarding import MAX_MESSAGE_BYTES as MAX_MESH_MESSAGE_BYTES
from meshcomm.sip.timers import RFC3261_TIMERS, TimerConfig

Address = tuple[str, int]

#: The built-in user agent of ``ctl send`` / ``ctl inbox`` (never a real socket address).
BUILTIN_ADDR: Final[Address] = ("builtin.invalid", 5060)
#: Host suffix naming a node in SIP: ``<16 hex of the node id>.mesh``.
MESH_HOST_SUFFIX: Final = ".mesh"
NODE_HEX_CHARS: Final = 16
#: Prefix of the address the edge gives a TCP connection: ``("tcp#17", port)``.
TCP_HOST_PREFIX: Final = "tcp#"
#: Largest SIP message accepted from a client or the mesh (it must fit one mesh message).
MAX_SIP_MESSAGE_BYTES: Final = MAX_MESH_MESSAGE_BYTES
#: Inbox entries kept (oldest dropped first).
MAX_INBOX: Final = 256
#: Outgoing built-in messages whose status is kept.
MAX_OUTBOX: Final = 256
#: Local client registrations (AoRs) held at once.
MAX_LOCAL_REGISTRATIONS: Final = 256
#: Contacts of local clients remembered for in-dialog delivery.
MAX_KNOWN_CONTACTS: Final = 1024
#: Per-source rate limiters kept (least recently used dropped).
MAX_RATE_BUCKETS: Final = 1024
#: Node-id prefixes remembered (from mesh traffic).
MAX_KNOWN_NODES: Final = 4096
#: Default registration expiry granted to a client that asks for none, seconds.
DEFAULT_EXPIRES_S: Final = 3600
MAX_EXPIRES_S: Final = 86400
#: §16.6 step 3 / §20.22: Max-Forwards we enforce on forwarded requests.
DEFAULT_MAX_FORWARDS: Final = 70


class Direction(enum.StrEnum):
    """Journal direction of a SIP message seen by the gateway."""

    FROM_CLIENT = "from-client"      # received from a local client (or the built-in UA)
    FROM_MESH = "from-mesh"          # received from another node's gateway
    TO_CLIENT = "to-client"          # delivered / relayed to a local client
    TO_MESH = "to-mesh"              # relayed to another node over the mesh
    ORIGINATED = "originated"        # a response the gateway itself generated
    DROPPED = "dropped"              # undecodable, oversized, or not routable


@dataclass(frozen=True, slots=True)
class LocalDatagram:
    """A SIP message for a local client (or the built-in UA) at ``dest``."""

    data: bytes
    dest: Address


class EnvelopeSlot:
    """Where whoever sends a :class:`MeshSip` writes the id of the overlay envelope that
    carries it (``MeshNode.send_unicast``'s return): the gateway's to-mesh journal record
    of the message waits for it (it is stored with the record's ``env``)."""

    __slots__ = ("env",)

    def __init__(self) -> None:
        self.env: bytes | None = None


@dataclass(frozen=True, slots=True)
class MeshSip:
    """A SIP message for the gateway of node ``dst`` (send with AppKind.SIP); ``sent``:
    set when the gateway journaled it (write the envelope id there)."""

    dst: bytes
    body: bytes
    sent: EnvelopeSlot | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ResolveAor:
    """The gateway asks the node to find remote ``aor`` (in another island, through the
    uplink); the answer comes back through ``SipGateway.resolved(request_id, ...)``."""

    request_id: int
    aor: str


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """A MESSAGE delivered to the node's built-in UA (``ctl inbox``)."""

    seq: int
    from_aor: str
    to_aor: str
    content_type: str | None
    body: bytes
    received_at: float


class SendStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"      # 2xx other than 202
    HELD = "held"                # 202: accepted for store-and-forward
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of a built-in ``send`` (event, and kept in the outbox)."""

    send_id: int
    to_aor: str
    status: SendStatus
    code: int | None
    reason: str
    #: The store-and-forward message id when the MESSAGE was held (202), else None.
    msg_id: bytes | None = None


class HoldRefused(LocalProtocolError):
    """The holder cannot take a message now (its own store is full of undelivered
    messages): the gateway answers 503 with Retry-After so the client tries again."""


class MessageHolder(Protocol):
    """The store-and-forward hand-off (meshcomm.node.storeforward implements it).

    ``hold`` returns True when the message is durably held at once, False when the
    outcome follows as ``SipGateway.hold_done(msg_id, durable, now)``; it raises
    HoldRefused (answered 503) or LocalProtocolError (the 480 stays). The gateway asks
    ``is_delivered`` before delivering a MESSAGE to a local client and reports each
    direct delivery with ``note_delivered`` (exactly once, end to end)."""

    def hold(self, *, msg_id: bytes, from_aor: str, to_aor: str, sip: bytes,
             now: float) -> bool: ...

    def local_delivery_done(self, msg_id: bytes, ok: bool, now: float) -> None: ...

    def remote_delivery_done(self, msg_id: bytes, ok: bool, now: float) -> None: ...

    def is_delivered(self, msg_id: bytes) -> bool: ...

    def note_delivered(self, msg_id: bytes, origin: bytes, now: float) -> None: ...


#: Which way an SDP body passes the gateway: the media layer's own enum, one definition.
SdpDirection = SdpPath


#: ``rewrite_sdp(direction, call_id, body, client_host) -> body``; identity by default.
#: ``client_host`` is the gateway's own address as the local client reaches it (what it
#: writes in Via and Record-Route toward that client; "" toward the mesh): a media relay
#: listening on a wildcard writes it into the SDP it gives the client. It may raise
#: DecodeError or meshcomm.media.relay.MediaSetupError (both with ``status_hint``).
SdpRewriter = Callable[[SdpDirection, str, bytes, str], bytes]


def identity_sdp(_direction: SdpDirection, _call_id: str, body: bytes,
                 _client_host: str) -> bytes:
    return body


#: ``end_call(call_id)``: the media of a call can be released (the SDP hook's owner).
CallEnder = Callable[[str], None]


def no_end_call(_call_id: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Behaviour of the gateway core (the runtime builds it from ``[sip]``)."""

    local_host: str = "127.0.0.1"
    local_port: int = 5060
    #: No final answer to a forwarded MESSAGE within this -> 480 (or 202 and hold).
    message_timeout_s: float = 6.0
    #: No provisional answer to a forwarded INVITE within this -> 480.
    invite_timeout_s: float = 4.0
    #: A request for an AoR the island does not know waits this long for the node to
    #: find it in another island (the DHT, through an uplinked relay) -> 480.
    resolve_timeout_s: float = 20.0
    #: Proxy transactions pending at once; more are answered 503.
    max_pending_transactions: int = 256
    #: Per-client sustained request rate and burst; beyond it 503.
    client_rate_per_s: float = 20.0
    client_burst: int = 40
    retry_after_s: int = 5
    #: RFC 3261 timers: T1 .. T2 retransmission of requests sent to local UDP clients
    #: (§17.1.1.2, §17.1.2.2); any other request without a final answer -> 408 after
    #: Timer F; an INVITE ringing without a final answer -> 408 after Timer C (§16.8).
    timers: TimerConfig = RFC3261_TIMERS
    keep_sip_bodies: bool = False
    #: The upstream SIP proxy (``[upstream]``, issue 10 item 5), or None: an AoR that
    #: neither the island nor the DHT knows is forwarded there instead of answered 404
    #: (a request that came from it is never sent back: 404).
    upstream: Address | None = None
    #: ``[upstream] trusted``: the upstream is inside the RFC 3325 trust domain, so the
    #: P-Asserted-Identity of its requests is kept (foreign identities only; see
    #: :mod:`meshcomm.node.gateway.edge_identity`). False: removed, nothing asserted.
    upstream_trusted: bool = False

    def __post_init__(self) -> None:
        positive = {"message_timeout_s": self.message_timeout_s,
                    "invite_timeout_s": self.invite_timeout_s,
                    "resolve_timeout_s": self.resolve_timeout_s,
                    "client_rate_per_s": self.client_rate_per_s}
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"sip.{key}", "must be > 0")
        if self.max_pending_transactions < 1 or self.client_burst < 1:
            raise ConfigError("sip.max_pending_transactions", "must be >= 1")
        if not 0 < self.local_port < 65536:
            raise ConfigError("sip.port", "must be 1..65535")
