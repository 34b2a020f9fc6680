"""Configuration, handles and events of the SIP user-agent core (:mod:`meshcomm.sip.ua`).

Events are frozen, slotted dataclasses; each carries an :class:`EventKind` (``kind``) so a
driver can dispatch with a table keyed by the Enum.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

from meshcomm.errors import ConfigError
from meshcomm.sip.message import NameAddr
from meshcomm.sip.presence import PresenceDocument
from meshcomm.sip.sdp import AudioPolicy, SessionDescription
from meshcomm.sip.timers import TimerConfig
from meshcomm.sip.uri import SipUri

Address = tuple[str, int]
MAX_EXPIRES_S = 2**31 - 1


@dataclass(frozen=True, slots=True)
class UaConfig:
    """A user agent's identity and behaviour. ``aor`` is our address-of-record;
    ``local_host``/``local_port`` go into Via and Contact."""

    aor: str
    local_host: str
    local_port: int
    display_name: str | None = None
    timers: TimerConfig = field(default_factory=TimerConfig)
    audio: AudioPolicy = field(default_factory=AudioPolicy)
    outbound_proxy: Address | None = None
    user_agent: str = "meshcomm/0.1"
    auto_ringing: bool = True
    register_expires_s: int = 3600
    subscribe_expires_s: int = 3600
    max_subscription_s: int = 7200

    def __post_init__(self) -> None:
        if not self.aor.startswith(("sip:", "sips:")):
            raise ConfigError("sip.aor", "must be a sip: or sips: URI")
        if not self.local_host:
            raise ConfigError("sip.local_host", "must not be empty")
        if not 0 < self.local_port < 65536:
            raise ConfigError("sip.local_port", "must be 1..65535")
        for key in ("register_expires_s", "subscribe_expires_s", "max_subscription_s"):
            value = getattr(self, key)
            if not 0 < value <= MAX_EXPIRES_S:
                raise ConfigError(f"sip.{key}", "must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class SipDatagram:
    """One datagram the UA wants sent to ``dest`` (host, port)."""

    data: bytes
    dest: Address


@dataclass(frozen=True, slots=True)
class CallHandle:
    call_id: int


@dataclass(frozen=True, slots=True)
class SubscriptionHandle:
    subscription_id: int


@dataclass(frozen=True, slots=True)
class RequestHandle:
    """Names a request we sent (outcome events) or one we received (``respond``)."""

    request_id: int


class EventKind(enum.Enum):
    INCOMING_MESSAGE = "incoming-message"
    INCOMING_CALL = "incoming-call"
    INCOMING_REGISTER = "incoming-register"
    INCOMING_SUBSCRIBE = "incoming-subscribe"
    REQUEST_SUCCEEDED = "request-succeeded"
    REQUEST_FAILED = "request-failed"
    CALL_RINGING = "call-ringing"
    CALL_ESTABLISHED = "call-established"
    CALL_UPDATED = "call-updated"
    CALL_ENDED = "call-ended"
    NOTIFIED = "notified"
    SUBSCRIPTION_ENDED = "subscription-ended"
    BAD_REQUEST = "bad-request"


class CallEndReason(enum.Enum):
    REJECTED = "rejected"            # the callee answered a non-2xx final
    DECLINED_LOCALLY = "declined"    # we rejected an incoming call
    CANCELLED = "cancelled"          # the caller cancelled before answer
    LOCAL_BYE = "local-bye"
    REMOTE_BYE = "remote-bye"
    TIMEOUT = "timeout"              # Timer B, or no ACK for our 2xx (§13.3.1.4)
    NOT_ACCEPTABLE = "not-acceptable"   # SDP negotiation failed (488)


class SubscriptionState(enum.Enum):
    """RFC 6665 §8.2.3 Subscription-State values."""

    ACTIVE = "active"
    PENDING = "pending"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    kind: ClassVar[EventKind] = EventKind.INCOMING_MESSAGE
    from_addr: NameAddr
    to_addr: NameAddr
    content_type: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class IncomingCall:
    kind: ClassVar[EventKind] = EventKind.INCOMING_CALL
    call: CallHandle
    from_addr: NameAddr
    to_addr: NameAddr
    offer: SessionDescription | None


@dataclass(frozen=True, slots=True)
class IncomingRegister:
    """A REGISTER to answer with :meth:`UserAgent.respond` or ``accept_register``."""

    kind: ClassVar[EventKind] = EventKind.INCOMING_REGISTER
    request: RequestHandle
    aor: SipUri
    contacts: tuple[NameAddr, ...]
    expires_s: int | None
    source: Address


@dataclass(frozen=True, slots=True)
class IncomingSubscribe:
    kind: ClassVar[EventKind] = EventKind.INCOMING_SUBSCRIBE
    subscription: SubscriptionHandle
    from_addr: NameAddr
    event: str
    expires_s: int


@dataclass(frozen=True, slots=True)
class RequestSucceeded:
    kind: ClassVar[EventKind] = EventKind.REQUEST_SUCCEEDED
    request: RequestHandle
    method: str
    status: int
    expires_s: int | None = None


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A final non-2xx response, or 408 for a transaction timeout."""

    kind: ClassVar[EventKind] = EventKind.REQUEST_FAILED
    request: RequestHandle
    method: str
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class CallRinging:
    kind: ClassVar[EventKind] = EventKind.CALL_RINGING
    call: CallHandle
    status: int


@dataclass(frozen=True, slots=True)
class CallEstablished:
    kind: ClassVar[EventKind] = EventKind.CALL_ESTABLISHED
    call: CallHandle
    remote_sdp: SessionDescription | None


@dataclass(frozen=True, slots=True)
class CallUpdated:
    """A re-INVITE (ours or the peer's) completed; hold/resume shows in the SDPs."""

    kind: ClassVar[EventKind] = EventKind.CALL_UPDATED
    call: CallHandle
    local_sdp: SessionDescription | None
    remote_sdp: SessionDescription | None


@dataclass(frozen=True, slots=True)
class CallEnded:
    kind: ClassVar[EventKind] = EventKind.CALL_ENDED
    call: CallHandle
    reason: CallEndReason
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Notified:
    kind: ClassVar[EventKind] = EventKind.NOTIFIED
    subscription: SubscriptionHandle
    state: SubscriptionState
    content_type: str | None
    body: bytes
    presence: PresenceDocument | None


@dataclass(frozen=True, slots=True)
class SubscriptionEnded:
    kind: ClassVar[EventKind] = EventKind.SUBSCRIPTION_ENDED
    subscription: SubscriptionHandle
    reason: str


@dataclass(frozen=True, slots=True)
class BadRequest:
    """A request we answered with an error before any application saw it (counters)."""

    kind: ClassVar[EventKind] = EventKind.BAD_REQUEST
    method: str
    status: int
    source: Address


UaEvent = (IncomingMessage | IncomingCall | IncomingRegister | IncomingSubscribe
           | RequestSucceeded | RequestFailed | CallRinging | CallEstablished | CallUpdated
           | CallEnded | Notified | SubscriptionEnded | BadRequest)
