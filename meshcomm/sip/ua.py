"""The SIP user-agent core (RFC 3261 §8, §10, §12-17; RFC 3428; RFC 6665 + RFC 3856).

Sans-IO, with the driving API of the architecture guide::

    ua = UserAgent(UaConfig(aor="sip:medic-7@fire.example", local_host="10.0.0.7",
                            local_port=5060), random.Random(seed))
    call = ua.invite("sip:chief@10.0.0.1", offer)     # commands only queue work
    ua.receive(datagram, (host, port), now)
    for dgram in ua.to_send(now): transmit(dgram.data, dgram.dest)
    deadline = ua.next_timer(); ...; ua.on_timer(now)
    while (event := ua.next_event()) is not None: ...

Incoming requests are checked in the order of §8.2 before any application sees them:
parser defects -> 400 (501 for an unknown method); Max-Forwards 0 -> 483 when the request
is not addressed to our AoR (an endpoint processes it, RFC 4475 §3.3.11); a recognised but
unimplemented method -> 405 with Allow, an unknown one -> 501; non-SIP Request-URI -> 416;
unsupported Require -> 420 with Unsupported; To tag without dialog -> 481; out-of-order
CSeq -> 500; merged request -> 482; unsupported body -> 415; an INVITE whose Accept excludes
SDP -> 406, whose offer has nothing acceptable -> 488. A request the parser cannot read is
dropped (there is no Via to answer), except a wrong SIP version, which is answered 505.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.sip import grammar as g
from meshcomm.sip.build import build_request, new_call_id
from meshcomm.sip.counters import (
    ANSWERED_UNDECODABLE_COUNTERS,
    UNDECODABLE_COUNTERS,
    SipDecodeReason,
    UaCounter,
)
from meshcomm.sip.dialog import incoming_dialog_id
from meshcomm.sip.message import NameAddr, SipRequest, SipResponse, parse_message_untrusted
from meshcomm.sip.presence import PresenceDocument, build_pidf
from meshcomm.sip.salvage import error_response_untrusted
from meshcomm.sip.transaction import Transaction, TxNotice
from meshcomm.sip.ua_base import (
    ALLOW_HEADER,
    SUPPORTED_OPTION_TAGS,
    ClientContext,
    Purpose,
    ServerRequest,
    response_address,
    stamp_via,
)
from meshcomm.sip.ua_calls import CallsMixin
from meshcomm.sip.ua_events import (
    Address,
    IncomingMessage,
    IncomingRegister,
    RequestFailed,
    RequestHandle,
    RequestSucceeded,
    SipDatagram,
    SubscriptionHandle,
    SubscriptionState,
    UaConfig,
    UaEvent,
)
from meshcomm.sip.ua_subs import PRESENCE_EVENT, SubscriptionsMixin
from meshcomm.sip.uri import SipUri

log = logging.getLogger(__name__)

Handler = Callable[[SipRequest, Transaction, float], None]
Outcome = Callable[[ClientContext, SipResponse | None, float], None]
#: Bodies each method accepts (§8.2.3); None means any type.
ACCEPTED_BODY_TYPES: dict[str, frozenset[str] | None] = {
    "INVITE": frozenset({"application/sdp"}),
    "NOTIFY": None, "MESSAGE": None,
}
#: Methods defined by SIP extensions that this core recognises but does not implement:
#: 405 with Allow (§8.2.1). Any other unknown method gets 501 (§21.5.2).
RECOGNISED_UNSUPPORTED = frozenset({"PRACK", "UPDATE", "INFO", "REFER", "PUBLISH"})
_VERSION_RE = re.compile(rb"^([A-Za-z!%*_+`'~.-]+ \S+ )SIP/[0-9]+\.[0-9]+\r?\n")
_VIA_VERSION_RE = re.compile(rb"SIP\s*/\s*[0-9]+\.[0-9]+\s*/")
#: How much of an unsupported-version request is rewritten to read it for the 505.
MAX_PATCH_BYTES = 4096
#: Most pending (unanswered) incoming requests held for the application.
MAX_PENDING_SERVER_REQUESTS = 1024


class UserAgent(SubscriptionsMixin, CallsMixin):
    """A SIP user agent core; see the module docstring."""

    def __init__(self, config: UaConfig, rng: random.Random) -> None:
        super().__init__(config, rng)
        self._init_calls()
        self._init_subscriptions()
        self._register_call_id: str | None = None
        self._register_cseq = 0
        self._recent_requests: dict[tuple[str, str, int, str], tuple[str, ...]] = {}
        self._handlers: dict[str, Handler] = {
            "INVITE": self.on_invite, "BYE": self.on_bye, "CANCEL": self.on_cancel,
            "OPTIONS": self._on_options, "MESSAGE": self._on_message,
            "REGISTER": self._on_register, "SUBSCRIBE": self.on_subscribe,
            "NOTIFY": self.on_notify,
        }
        self._outcomes: dict[Purpose, Outcome] = {
            Purpose.REGISTER: self._simple_outcome, Purpose.MESSAGE: self._simple_outcome,
            Purpose.OPTIONS: self._simple_outcome, Purpose.BYE: self._simple_outcome,
            Purpose.CANCEL: self._cancel_outcome, Purpose.INVITE: self.on_invite_response,
            Purpose.REINVITE: self.on_reinvite_response,
            Purpose.SUBSCRIBE: self.on_subscribe_response,
            Purpose.NOTIFY: self.on_notify_response,
        }

    # =========================================================== driving API
    def receive(self, data: bytes, src: Address, now: float) -> None:
        """Feed one datagram received from ``src`` at time ``now``."""
        self._advance(now)
        try:
            message = parse_message_untrusted(data)
        except DecodeError as exc:
            self._undecodable(data, src, exc, now)
            return
        try:
            if isinstance(message, SipResponse):
                self._on_response(message, now)
            else:
                self._on_request(message, src, now)
        except DecodeError as exc:      # a header only read on use turned out malformed
            self.count(UNDECODABLE_COUNTERS[SipDecodeReason.of(exc.reason)])
            log.debug("dropping message from %s: %s", src, exc)
        self._process_notices(now)

    def to_send(self, now: float) -> list[SipDatagram]:
        self._advance(now)
        return self.take_datagrams()

    def next_timer(self) -> float | None:
        if self._commands:
            return self.now_s
        candidates = [t for t in (self.txl.next_timer(), self.ua_next_timer(),
                                  self.subscriptions_next_timer(), self.calls_next_timer())
                      if t is not None]
        return min(candidates, default=None)

    def on_timer(self, now: float) -> None:
        self._advance(now)
        self.txl.on_timer(now)
        self._process_notices(now)
        for pending in self.fire_2xx_retransmits(now):
            self.on_2xx_gave_up(pending.call, now)
        self.fire_subscription_timers(now)
        self.fire_call_timers(now)
        self._process_notices(now)
        self._sweep()

    def next_event(self) -> UaEvent | None:
        return self._events.popleft() if self._events else None

    def _advance(self, now: float) -> None:
        self.now_s = max(self.now_s, now)
        while self._commands:
            self._commands.popleft()(self.now_s)
        self._process_notices(self.now_s)

    # ============================================================== commands
    def register(self, *, expires_s: int | None = None,
                 registrar: str | None = None) -> RequestHandle:
        """REGISTER our Contact for our AoR (§10.2); ``expires_s=0`` de-registers."""
        uri = (self.parse_target(registrar) if registrar
               else SipUri(scheme=self.aor.scheme, host=self.aor.host, port=self.aor.port))
        expires = self.config.register_expires_s if expires_s is None else expires_s
        if expires < 0:
            raise LocalProtocolError("expires_s must be >= 0")
        handle = RequestHandle(self.next_id())
        self._commands.append(lambda now: self._do_register(handle, uri, expires, now))
        return handle

    def _do_register(self, handle: RequestHandle, target: SipUri, expires: int,
                     now: float) -> None:
        if self._register_call_id is None:   # §10.2.4: one Call-ID per registrar
            self._register_call_id = new_call_id(self.rng, self.config.local_host)
        self._register_cseq += 1
        request = build_request(
            "REGISTER", target, from_addr=self.local_addr().with_params(tag=self.new_tag()),
            to_addr=self.local_addr(), call_id=self._register_call_id,
            cseq=self._register_cseq, via=self.new_via(),
            contact=self.contact().with_params(expires=str(expires)),
            extra_headers=[*self.common_headers(), ("Expires", str(expires))])
        self.start_client(request, self.destination(target), Purpose.REGISTER, now,
                          handle=handle)

    def message(self, to: str, text: str | bytes,
                content_type: str = "text/plain;charset=utf-8") -> RequestHandle:
        """Send a MESSAGE (RFC 3428) outside any dialog."""
        body = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return self._out_of_dialog("MESSAGE", to, Purpose.MESSAGE, body, content_type)

    def options(self, to: str) -> RequestHandle:
        """Query ``to``'s capabilities (§11)."""
        return self._out_of_dialog("OPTIONS", to, Purpose.OPTIONS, b"", None)

    def _out_of_dialog(self, method: str, to: str, purpose: Purpose, body: bytes,
                       content_type: str | None) -> RequestHandle:
        uri = self.parse_target(to)
        handle = RequestHandle(self.next_id())

        def run(now: float) -> None:
            request = build_request(
                method, uri, from_addr=self.local_addr().with_params(tag=self.new_tag()),
                to_addr=NameAddr(uri), call_id=new_call_id(self.rng, self.config.local_host),
                cseq=1, via=self.new_via(), extra_headers=self.common_headers(), body=body,
                content_type=content_type)
            self.start_client(request, self.destination(uri), purpose, now, handle=handle)

        self._commands.append(run)
        return handle

    def respond(self, request: RequestHandle, status: int, *,
                   headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                   content_type: str | None = None) -> None:
        """Answer a received request the application was asked about (REGISTER)."""
        def run(now: float) -> None:
            pending = self._server_requests.pop(request.request_id, None)
            if pending is None:
                log.info("no pending request %s", request.request_id)
                return
            self.respond_tx(pending.tx, status, now, to_tag=pending.to_tag or None,
                            headers=headers or [], body=body, content_type=content_type)

        self._commands.append(run)

    def accept_register(self, request: RequestHandle, expires_s: int) -> None:
        """200 OK to a REGISTER, echoing its Contacts with ``expires_s`` (§10.3 step 8)."""
        pending = self._server_requests.get(request.request_id)
        contacts = [] if pending is None else [
            str(c.with_params(expires=str(expires_s))) for c in pending.request.contacts]
        self.respond(request, 200, headers=[("Contact", c) for c in contacts])

    def notify(self, subscription: SubscriptionHandle, pidf: PresenceDocument | bytes,
               state: SubscriptionState = SubscriptionState.ACTIVE) -> RequestHandle:
        """Send a presence NOTIFY in ``subscription`` (RFC 6665 §4.2.2)."""
        body = build_pidf(pidf) if isinstance(pidf, PresenceDocument) else bytes(pidf)
        return self.queue_notify(subscription, body, state)

    # ========================================================= incoming side
    def _undecodable(self, data: bytes, src: Address, exc: DecodeError, now: float) -> None:
        """A refused request that still carries a Via is answered with the parser's status
        hint from its salvaged headers (RFC 4475 §3.1.2, §3.3.1); other bytes are dropped.
        A request with a wrong SIP version is read as 2.0 only to answer it 505 through a
        server transaction (§8.2.1; RFC 4475 'badvers')."""
        self.count(UNDECODABLE_COUNTERS[SipDecodeReason.of(exc.reason)])
        if exc.status_hint != 505:
            answer = error_response_untrusted(data, exc, self.new_tag())
            if answer is None:
                log.debug("dropping undecodable datagram from %s: %s", src, exc)
                return
            self.count(ANSWERED_UNDECODABLE_COUNTERS.get(exc.status_hint,
                                                         UaCounter.ANSWERED_UNDECODABLE_OTHER))
            self.send_raw(answer, src)
            return
        head = _VERSION_RE.sub(rb"\1SIP/2.0\r\n", data[:MAX_PATCH_BYTES], count=1)
        head = _VIA_VERSION_RE.sub(b"SIP/2.0/", head)
        patched = head + data[MAX_PATCH_BYTES:]
        try:
            message = parse_message_untrusted(patched)
        except DecodeError:
            return
        if isinstance(message, SipRequest) and message.method != "ACK":
            request = stamp_via(message, src)
            if self.txl.match_request(request) is None:
                try:
                    tx = self.txl.start_server(request, response_address(request), now)
                except LocalProtocolError:
                    self.count(UaCounter.SERVER_TX_REFUSED)
                    return
                self.reject_request(tx, request, 505, now)

    def _on_response(self, response: SipResponse, now: float) -> None:
        if not self.is_our_via(response.top_via):
            self.count(UaCounter.RESPONSE_NOT_OURS)
            return
        if self.txl.on_response(response, now):
            return
        if 200 <= response.status < 300 and response.cseq.method == "INVITE":
            self.on_stray_2xx(response)

    def _on_request(self, request: SipRequest, src: Address, now: float) -> None:
        request = stamp_via(request, src)
        if self.txl.on_request(request, now):
            return
        if request.method == "ACK":
            self.on_ack(request, now)
            return
        try:
            tx = self.txl.start_server(request, response_address(request), now)
        except LocalProtocolError:
            self.count(UaCounter.SERVER_TX_REFUSED)
            return
        problem = self._precheck(request)
        if problem is not None:
            status, headers = problem
            self.reject_request(tx, request, status, now, headers=headers)
            return
        try:
            self._handlers[request.method](request, tx, now)
        except DecodeError as exc:
            if tx.last_response is None or tx.last_response.status < 200:
                self.reject_request(tx, request, exc.status_hint, now)
            raise

    def _precheck(self, request: SipRequest) -> tuple[int, list[tuple[str, str]]] | None:
        """§8.2.1-§8.2.3 checks; (status, extra headers) of the error to answer."""
        known = request.method in self._handlers
        if request.defects:                      # RFC 4475 §3.1.2.18: 501 when unknown
            return (400 if known else 501, [])
        if request.max_forwards == 0 and not self._addressed_to_us(request):
            return (483, [])                     # RFC 4475 §3.3.11: an endpoint answers
        if not known:                            # §8.2.1 (405) and §21.5.2 (501)
            status = 405 if request.method in RECOGNISED_UNSUPPORTED else 501
            return (status, [("Allow", ALLOW_HEADER)])
        if not request.uri.is_sip:
            return (416, [])
        unsupported = [tag for value in request.header_values("Require")
                       for tag in [value.strip()] if tag and tag not in SUPPORTED_OPTION_TAGS]
        if unsupported and request.method != "CANCEL":
            return (420, [("Unsupported", ", ".join(unsupported))])
        in_dialog = self._dialog_check(request)
        if in_dialog is not None:
            return (in_dialog, [])
        if self._is_merged(request):
            return (482, [])
        return self._body_check(request)

    def _addressed_to_us(self, request: SipRequest) -> bool:
        """The Request-URI names our AoR's user (or no user): we are the endpoint, not a
        hop that would have to forward it."""
        return request.uri.user is None or request.uri.user == self.aor.user

    def _dialog_check(self, request: SipRequest) -> int | None:
        dialog_id = incoming_dialog_id(request)
        if dialog_id is None or request.method == "CANCEL":
            return None
        dialog = self._dialogs.get(dialog_id)
        if dialog is None:
            if request.method == "NOTIFY" and self.is_pending_notify(request):
                return None
            return 481
        return dialog.check_request(request)

    def _is_merged(self, request: SipRequest) -> bool:
        """§8.2.2.2: same From tag, Call-ID and CSeq as a live transaction, other branch."""
        if request.to_addr.tag is not None:
            return False
        key = (request.from_addr.tag or "", request.call_id, request.cseq.number,
               request.cseq.method)
        branch_key = (request.top_via.branch or "", request.top_via.sent_by)
        previous = self._recent_requests.get(key)
        if previous is not None and previous != branch_key and self._tx_alive(previous):
            return True
        self._recent_requests[key] = branch_key
        return False

    def _tx_alive(self, branch_key: tuple[str, ...]) -> bool:
        return any(tx_key[1] == branch_key[0] for tx_key in self._live_server_keys())

    def _live_server_keys(self) -> list[tuple[str, ...]]:
        return [pending.tx.key for pending in self._server_requests.values()] + [
            call.invite_tx.key for call in self._calls.values() if not call.outgoing]

    def _body_check(self, request: SipRequest) -> tuple[int, list[tuple[str, str]]] | None:
        if not request.body:
            return None
        encoding = (request.get_header("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            return (415, [("Accept-Encoding", "identity")])
        allowed = ACCEPTED_BODY_TYPES.get(request.method)
        ctype = (request.content_type or "").split(";")[0].strip().lower()
        if allowed is not None and ctype not in allowed:
            return (415, [("Accept", ", ".join(sorted(allowed)))])
        return None

    def _on_options(self, request: SipRequest, tx: Transaction, now: float) -> None:
        self.respond_tx(tx, 200, now, to_tag=self.new_tag(), contact=True, headers=[
            ("Allow", ALLOW_HEADER), ("Accept", "application/sdp, application/pidf+xml"),
            ("Accept-Encoding", "identity"), ("Allow-Events", PRESENCE_EVENT)])

    def _on_message(self, request: SipRequest, tx: Transaction, now: float) -> None:
        self.respond_tx(tx, 200, now, to_tag=self.new_tag())
        self.emit(IncomingMessage(request.from_addr, request.to_addr, request.content_type,
                                  request.body))

    def _on_register(self, request: SipRequest, tx: Transaction, now: float) -> None:
        if not request.to_addr.uri.is_sip:        # §10.3 step 3; RFC 4475 §3.3.4
            self.reject_request(tx, request, 416, now)
            return
        if len(self._server_requests) >= MAX_PENDING_SERVER_REQUESTS:
            self.reject_request(tx, request, 503, now)
            return
        handle = RequestHandle(self.next_id())
        self._server_requests[handle.request_id] = ServerRequest(request, tx, to_tag=self.new_tag())
        self.emit(IncomingRegister(handle, request.to_addr.uri, request.contacts,
                                   request.expires, tx.peer))

    # ============================================================== outcomes
    def _process_notices(self, now: float) -> None:
        while (notice := self.txl.next_notice()) is not None:
            try:
                self._process_notice(notice, now)
            except DecodeError as exc:  # a header only read on use turned out malformed
                self.count(UNDECODABLE_COUNTERS[SipDecodeReason.of(exc.reason)])
                log.debug("dropping %s: %s", type(notice.message).__name__, exc)

    def _process_notice(self, notice: TxNotice, now: float) -> None:
        tx = notice.tx
        if not tx.is_client:
            if isinstance(notice.message, SipRequest) and notice.message.method == "ACK":
                self.on_ack(notice.message, now)
            return
        ctx = self._client_ctx.get(tx.tx_id)
        if ctx is None:
            return
        response = notice.message if isinstance(notice.message, SipResponse) else None
        self._outcomes[ctx.purpose](ctx, response, now)

    def _simple_outcome(self, ctx: ClientContext, response: SipResponse | None,
                        now: float) -> None:
        method = ctx.tx.request.method
        if response is None:
            self.emit(RequestFailed(ctx.handle, method, 408, "timeout"))
        elif 200 <= response.status < 300:
            self.emit(RequestSucceeded(ctx.handle, method, response.status,
                                       _granted_expires(response)))
        elif response.status >= 300:
            self.emit(RequestFailed(ctx.handle, method, response.status, response.reason))

    def _cancel_outcome(self, ctx: ClientContext, response: SipResponse | None,
                        now: float) -> None:
        """The INVITE's own final response reports the call; CANCEL's is informational."""

    def _sweep(self) -> None:
        self._client_ctx = {k: v for k, v in self._client_ctx.items() if not v.tx.terminated}
        self._server_requests = {k: v for k, v in self._server_requests.items()
                                 if not v.tx.terminated}
        live = {key[1] for key in self._live_server_keys()}
        self._recent_requests = {k: v for k, v in self._recent_requests.items()
                                 if v[0] in live}
        self.sweep_calls()


def _granted_expires(response: SipResponse) -> int | None:
    for contact in response.contacts:
        value = contact.param("expires")
        granted = g.bounded_number(value, g.MAX_DELTA_SECONDS)
        if granted is not None:
            return granted
    return response.expires
