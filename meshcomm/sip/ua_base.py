"""Shared machinery of the user-agent core: identity, sending, responding, timers.

:class:`UaBase` is extended by :class:`meshcomm.sip.ua_calls.CallsMixin` and
:class:`meshcomm.sip.ua.UserAgent`; it holds the transaction layer, the outbox, the event
queue, the dialog registry and UA-level timers (2xx retransmission, subscription expiry).
"""

from __future__ import annotations

import enum
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.sip.build import build_response, new_branch, new_tag
from meshcomm.sip.counters import REJECTED_COUNTERS, UaCounter
from meshcomm.sip.dialog import Dialog, DialogId
from meshcomm.sip.message import NameAddr, SipRequest, SipResponse, Via
from meshcomm.sip.transaction import DEFAULT_SIP_PORT, Transaction, TransactionLayer
from meshcomm.sip.ua_events import (
    Address,
    BadRequest,
    CallHandle,
    RequestHandle,
    SipDatagram,
    SubscriptionHandle,
    UaConfig,
    UaEvent,
)
from meshcomm.sip.uri import SipUri, parse_uri_untrusted

log = logging.getLogger(__name__)

#: §8.2.1 / §20.5: methods this UA core implements.
ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE", "REGISTER",
                   "SUBSCRIBE", "NOTIFY")
ALLOW_HEADER = ", ".join(ALLOWED_METHODS)
#: Option tags we support (§8.2.2.3); anything else in Require gets 420.
SUPPORTED_OPTION_TAGS: frozenset[str] = frozenset()
#: Events we queue before a driver drains them (oldest are dropped beyond this).
MAX_QUEUED_EVENTS = 10_000


class Purpose(enum.Enum):
    """Why a client transaction was started; keys the outcome dispatch table."""

    REGISTER = "register"
    MESSAGE = "message"
    OPTIONS = "options"
    INVITE = "invite"
    REINVITE = "reinvite"
    BYE = "bye"
    CANCEL = "cancel"
    SUBSCRIBE = "subscribe"
    NOTIFY = "notify"


@dataclass(eq=False, slots=True)
class ClientContext:
    purpose: Purpose
    handle: RequestHandle
    tx: Transaction
    call: CallHandle | None = None
    subscription: SubscriptionHandle | None = None


@dataclass(eq=False, slots=True)
class Pending2xx:
    """A 2xx to an INVITE we retransmit until its ACK arrives (§13.3.1.4)."""

    call: CallHandle
    data: bytes
    dest: Address
    cseq: int
    next_at_s: float
    interval_s: float
    give_up_at_s: float


@dataclass(eq=False, slots=True)
class ServerRequest:
    """A received request waiting for the application's ``respond``."""

    request: SipRequest
    tx: Transaction
    to_tag: str = field(default="")


def address_of(uri: SipUri) -> Address:
    """Host and port a request to ``uri`` is sent to (no DNS: the host is used as is)."""
    host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
    return (host, uri.port or DEFAULT_SIP_PORT)


def via_address(via: Via) -> Address:
    """§18.2.2 with RFC 3581: where responses to a request whose top Via is ``via`` go:
    received/rport, else its sent-by. (A parsed Via's rport is digits: the parser checks.)"""
    return (via.received or via.host.strip("[]"), via.rport or via.port or DEFAULT_SIP_PORT)


def response_address(request: SipRequest) -> Address:
    return via_address(request.top_via)


def stamp_via(request: SipRequest, src: Address) -> SipRequest:
    """§18.2.1 / RFC 3581: add received (and rport when asked) to the top Via."""
    via = request.top_via
    updates: dict[str, str | None] = {}
    if via.host.strip("[]") != src[0]:
        updates["received"] = src[0]
    if via.has_rport:
        updates["received"] = src[0]
        updates["rport"] = str(src[1])
    if not updates:
        return request
    values = request.header_values("Via")
    return request.with_headers_replaced("Via", [str(via.with_params(**updates)), *values[1:]])


class UaBase:
    """Infrastructure; see the module docstring. Not used directly."""

    def __init__(self, config: UaConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        try:
            self.aor = parse_uri_untrusted(config.aor)
        except DecodeError as exc:
            raise LocalProtocolError(f"bad AoR {config.aor!r}: {exc}") from None
        self.txl = TransactionLayer(config.timers)
        self._events: deque[UaEvent] = deque()
        self._commands: deque[Callable[[float], None]] = deque()
        self._client_ctx: dict[int, ClientContext] = {}
        self._server_requests: dict[int, ServerRequest] = {}
        self._dialogs: dict[DialogId, Dialog] = {}
        self._pending_2xx: dict[DialogId, Pending2xx] = {}
        self._ids = 0
        self.now_s = 0.0
        self.counters: dict[str, int] = {}

    # ------------------------------------------------------------------ identity
    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def count(self, name: UaCounter) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def local_addr(self) -> NameAddr:
        return NameAddr(self.aor, self.config.display_name)

    def contact(self) -> NameAddr:
        uri = SipUri(scheme="sip", user=self.aor.user, host=self._host(),
                     port=self.config.local_port)
        return NameAddr(uri)

    def _host(self) -> str:
        host = self.config.local_host
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def new_via(self) -> Via:
        return Via("UDP", self._host(), self.config.local_port,
                   (("branch", new_branch(self.rng)), ("rport", None)))

    def new_tag(self) -> str:
        return new_tag(self.rng)

    def common_headers(self) -> list[tuple[str, str]]:
        return [("User-Agent", self.config.user_agent), ("Allow", ALLOW_HEADER)]

    def destination(self, uri: SipUri) -> Address:
        return self.config.outbound_proxy or address_of(uri)

    def is_our_via(self, via: Via) -> bool:
        """§18.1.2: a response whose top Via is not ours is discarded."""
        return (via.host.strip("[]") == self.config.local_host.strip("[]")
                and (via.port or DEFAULT_SIP_PORT) == self.config.local_port)

    # ------------------------------------------------------------------- output
    def emit(self, event: UaEvent) -> None:
        if len(self._events) >= MAX_QUEUED_EVENTS:
            self._events.popleft()
            self.count(UaCounter.EVENTS_DROPPED)
        self._events.append(event)

    def send_raw(self, data: bytes, dest: Address) -> None:
        self.txl.enqueue(data, dest)

    def take_datagrams(self) -> list[SipDatagram]:
        return [SipDatagram(data, dest) for data, dest in self.txl.take_outgoing()]

    def parse_target(self, to: str) -> SipUri:
        """A command's target URI; our caller's mistake is a LocalProtocolError."""
        try:
            uri = parse_uri_untrusted(to)
        except DecodeError as exc:
            raise LocalProtocolError(f"bad target URI {to!r}: {exc}") from None
        if not uri.is_sip:
            raise LocalProtocolError(f"only sip:/sips: targets are supported: {to!r}")
        return uri

    def reject_request(self, tx: Transaction, request: SipRequest, status: int, now: float,
                       *, reason: str | None = None,
                       headers: Sequence[tuple[str, str]] = ()) -> None:
        """Answer a request with an error before (or instead of) the application."""
        self.count(REJECTED_COUNTERS.get(status, UaCounter.REJECTED_OTHER))
        self.emit(BadRequest(request.method, status, tx.peer))
        to_tag = None if request.to_addr.tag else self.new_tag()
        self.respond_tx(tx, status, now, to_tag=to_tag, reason=reason, headers=headers)

    def start_client(self, request: SipRequest, dest: Address, purpose: Purpose, now: float,
                     *, handle: RequestHandle | None = None, call: CallHandle | None = None,
                     subscription: SubscriptionHandle | None = None) -> ClientContext:
        tx = self.txl.start_client(request, dest, now)
        ctx = ClientContext(purpose, handle or RequestHandle(self.next_id()), tx, call,
                            subscription)
        self._client_ctx[tx.tx_id] = ctx
        return ctx

    def respond_tx(self, tx: Transaction, status: int, now: float, *, to_tag: str | None = None,
                reason: str | None = None, contact: bool = False,
                headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
                content_type: str | None = None) -> SipResponse:
        """Send a response through server transaction ``tx``."""
        response = build_response(tx.request, status, reason, to_tag=to_tag,
                                  contact=self.contact() if contact else None,
                                  extra_headers=[*headers,
                                                 ("User-Agent", self.config.user_agent)],
                                  body=body, content_type=content_type)
        self.txl.respond(tx, response, now)
        return response

    # ------------------------------------------------------- 2xx retransmission
    def start_2xx_retransmit(self, dialog: Dialog, call: CallHandle, response: SipResponse,
                             dest: Address, now: float) -> None:
        """§13.3.1.4: retransmit our 2xx at T1, 2T1... capped at T2 until ACK or 64*T1."""
        timers = self.config.timers
        self._pending_2xx[dialog.dialog_id] = Pending2xx(
            call, response.serialize(), dest, response.cseq.number, now + timers.t1_s,
            timers.t1_s, now + timers.timer_h_s)

    def fire_2xx_retransmits(self, now: float) -> list[Pending2xx]:
        """Retransmit due 2xx responses; returns the ones that gave up (no ACK)."""
        expired: list[Pending2xx] = []
        for dialog_id, pending in list(self._pending_2xx.items()):
            if pending.give_up_at_s <= now:
                del self._pending_2xx[dialog_id]
                expired.append(pending)
            elif pending.next_at_s <= now:
                self.send_raw(pending.data, pending.dest)
                pending.interval_s = min(2 * pending.interval_s, self.config.timers.t2_s)
                pending.next_at_s = now + pending.interval_s
        return expired

    def ua_next_timer(self) -> float | None:
        deadlines = [min(p.next_at_s, p.give_up_at_s) for p in self._pending_2xx.values()]
        return min(deadlines, default=None)
