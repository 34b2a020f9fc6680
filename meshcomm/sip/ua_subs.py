"""SUBSCRIBE/NOTIFY (RFC 6665) with the presence event package (RFC 3856) for the
user-agent core. Mixed into :class:`meshcomm.sip.ua.UserAgent`.

Notifier: an accepted SUBSCRIBE gets 200 with the granted Expires and an
:class:`IncomingSubscribe` event; the application must then call ``notify`` (RFC 6665
§4.2.1.2: a NOTIFY follows every accepted SUBSCRIBE). When a subscription expires the UA
sends the final ``terminated;reason=timeout`` NOTIFY itself. Subscriber: a NOTIFY may
arrive before the 200 of its SUBSCRIBE (§4.1.2.4) and then creates the dialog. Refreshing
a subscription before it expires is left to the application (call ``subscribe`` again).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meshcomm.errors import DecodeError
from meshcomm.sip import grammar as g
from meshcomm.sip.build import build_request, new_call_id
from meshcomm.sip.counters import UaCounter
from meshcomm.sip.dialog import (
    Dialog,
    DialogId,
    DialogState,
    dialog_from_uac,
    dialog_from_uas,
    incoming_dialog_id,
    response_dialog_id,
)
from meshcomm.sip.message import NameAddr, SipRequest, SipResponse
from meshcomm.sip.presence import PIDF_CONTENT_TYPE, PresenceDocument, parse_pidf_untrusted
from meshcomm.sip.transaction import Transaction
from meshcomm.sip.ua_base import ClientContext, Purpose, UaBase
from meshcomm.sip.ua_events import (
    IncomingSubscribe,
    Notified,
    RequestFailed,
    RequestHandle,
    RequestSucceeded,
    SubscriptionEnded,
    SubscriptionHandle,
    SubscriptionState,
)

PRESENCE_EVENT = "presence"
SUPPORTED_EVENTS = frozenset({PRESENCE_EVENT})
INITIAL_CSEQ_MAX = 2**16
#: Most subscriptions (both roles) one UA holds.
MAX_SUBSCRIPTIONS = 1024


class SubRole(enum.Enum):
    SUBSCRIBER = "subscriber"
    NOTIFIER = "notifier"


@dataclass(eq=False, slots=True)
class Subscription:
    handle: SubscriptionHandle
    role: SubRole
    event: str
    call_id: str
    local_tag: str
    expires_at_s: float
    subscribe: SipRequest | None = None      # subscriber: our initial SUBSCRIBE
    dialog: Dialog | None = None
    ended: bool = False


def _event_package(request: SipRequest) -> str:
    return (request.get_header("Event") or "").split(";")[0].strip().lower()


def _parse_subscription_state(value: str) -> tuple[SubscriptionState, int | None, str]:
    """RFC 6665 §8.2.3: ``active;expires=N``, ``terminated;reason=R``..."""
    parts = [p.strip() for p in value.split(";")]
    try:
        state = SubscriptionState(parts[0].lower())
    except ValueError:
        state = SubscriptionState.ACTIVE   # §8.2.3: unknown values are treated as active
    params = dict(p.partition("=")[::2] for p in parts[1:])
    expires_text = params.get("expires", "").strip()
    expires = g.bounded_number(expires_text, g.MAX_DELTA_SECONDS)
    return state, expires, params.get("reason", "").strip() or "noresource"


class SubscriptionsMixin(UaBase):
    """SUBSCRIBE and NOTIFY handling for both roles."""

    def _init_subscriptions(self) -> None:
        self._subs: dict[int, Subscription] = {}
        self._dialog_subs: dict[DialogId, Subscription] = {}
        self._subscriber_subs: dict[tuple[str, str], Subscription] = {}

    # ================================================================ commands
    def subscribe(self, to: str, event: str = PRESENCE_EVENT,
                  expires_s: int | None = None) -> SubscriptionHandle:
        """SUBSCRIBE to ``event`` of ``to``; events: RequestSucceeded/Failed, Notified,
        SubscriptionEnded."""
        uri = self.parse_target(to)
        expires = self.config.subscribe_expires_s if expires_s is None else expires_s
        handle = SubscriptionHandle(self.next_id())

        def run(now: float) -> None:
            tag = self.new_tag()
            request = build_request(
                "SUBSCRIBE", uri, from_addr=self.local_addr().with_params(tag=tag),
                to_addr=NameAddr(uri), call_id=new_call_id(self.rng, self.config.local_host),
                cseq=1, via=self.new_via(), contact=self.contact(),
                extra_headers=[*self.common_headers(), ("Event", event),
                               ("Expires", str(expires)), ("Accept", PIDF_CONTENT_TYPE)])
            sub = Subscription(handle, SubRole.SUBSCRIBER, event, request.call_id, tag,
                               self._subscriber_deadline(now, expires), subscribe=request)
            self._subs[handle.subscription_id] = sub
            self._subscriber_subs[(request.call_id, tag)] = sub
            self.start_client(request, self.destination(uri), Purpose.SUBSCRIBE, now,
                              handle=RequestHandle(handle.subscription_id), subscription=handle)

        self._commands.append(run)
        return handle

    def unsubscribe(self, subscription: SubscriptionHandle) -> RequestHandle:
        """In-dialog SUBSCRIBE with Expires: 0 (RFC 6665 §4.1.2.3)."""
        handle = RequestHandle(self.next_id())

        def run(now: float) -> None:
            sub = self._subs.get(subscription.subscription_id)
            if sub is None or sub.dialog is None or sub.role is not SubRole.SUBSCRIBER:
                self.emit(RequestFailed(handle, "SUBSCRIBE", 481, "no such subscription"))
                return
            request = sub.dialog.make_request(
                "SUBSCRIBE", via=self.new_via(), contact=self.contact(),
                extra_headers=[("Event", sub.event), ("Expires", "0")])
            self.start_client(request, self.destination(sub.dialog.next_hop_uri()),
                              Purpose.SUBSCRIBE, now, handle=handle, subscription=subscription)

        self._commands.append(run)
        return handle

    def queue_notify(self, subscription: SubscriptionHandle, body: bytes,
                     state: SubscriptionState) -> RequestHandle:
        handle = RequestHandle(self.next_id())
        self._commands.append(lambda now: self._send_notify(subscription, body, state,
                                                            handle, now, "noresource"))
        return handle

    def _send_notify(self, subscription: SubscriptionHandle, body: bytes,
                     state: SubscriptionState, handle: RequestHandle, now: float,
                     reason: str) -> None:
        sub = self._subs.get(subscription.subscription_id)
        if sub is None or sub.dialog is None or sub.role is not SubRole.NOTIFIER:
            self.emit(RequestFailed(handle, "NOTIFY", 481, "no such subscription"))
            return
        remaining = int(sub.expires_at_s - now)
        if remaining <= 0 and state is not SubscriptionState.TERMINATED:
            state, reason = SubscriptionState.TERMINATED, "timeout"
        value = (f"terminated;reason={reason}" if state is SubscriptionState.TERMINATED
                 else f"{state.value};expires={remaining}")
        request = sub.dialog.make_request(
            "NOTIFY", via=self.new_via(), contact=self.contact(),
            extra_headers=[("Event", sub.event), ("Subscription-State", value)],
            body=body, content_type=PIDF_CONTENT_TYPE if body else None)
        self.start_client(request, self.destination(sub.dialog.next_hop_uri()),
                          Purpose.NOTIFY, now, handle=handle, subscription=subscription)
        if state is SubscriptionState.TERMINATED:
            self._end_subscription(sub, reason)

    # ======================================================= incoming requests
    def on_subscribe(self, request: SipRequest, tx: Transaction, now: float) -> None:
        if _event_package(request) not in SUPPORTED_EVENTS:
            self.reject_request(tx, request, 489, now, headers=[("Allow-Events",
                                                                 PRESENCE_EVENT)])
            return
        requested = request.expires
        expires = min(self.config.subscribe_expires_s if requested is None else requested,
                      self.config.max_subscription_s)
        dialog_id = incoming_dialog_id(request)
        if dialog_id is not None:                           # refresh or unsubscribe
            sub = self._dialog_subs.get(dialog_id)
            if sub is None or sub.role is not SubRole.NOTIFIER:
                self.reject_request(tx, request, 481, now)
                return
            sub.expires_at_s = now + expires
            self.respond_tx(tx, 200, now, contact=True, headers=[("Expires", str(expires))])
            if expires == 0:
                self._send_notify(sub.handle, b"", SubscriptionState.TERMINATED,
                                  RequestHandle(self.next_id()), now, "timeout")
            return
        if len(self._subs) >= MAX_SUBSCRIPTIONS:
            self.reject_request(tx, request, 503, now)
            return
        tag = self.new_tag()
        self.respond_tx(tx, 200, now, to_tag=tag, contact=True,
                        headers=[("Expires", str(expires))])
        dialog = dialog_from_uas(request, tag,
                                 initial_local_seq=self.rng.randint(1, INITIAL_CSEQ_MAX))
        sub = Subscription(SubscriptionHandle(self.next_id()), SubRole.NOTIFIER,
                           _event_package(request), request.call_id, tag, now + expires,
                           dialog=dialog)
        self._subs[sub.handle.subscription_id] = sub
        self._register_sub_dialog(sub, dialog)
        self.emit(IncomingSubscribe(sub.handle, request.from_addr, sub.event, expires))

    def is_pending_notify(self, request: SipRequest) -> bool:
        """A NOTIFY for a SUBSCRIBE of ours whose 200 has not arrived (§4.1.2.4)."""
        tag = request.to_addr.tag
        return tag is not None and (request.call_id, tag) in self._subscriber_subs

    def on_notify(self, request: SipRequest, tx: Transaction, now: float) -> None:
        dialog_id = incoming_dialog_id(request)
        sub = self._dialog_subs.get(dialog_id) if dialog_id else None
        if sub is None and request.to_addr.tag is not None:
            sub = self._subscriber_subs.get((request.call_id, request.to_addr.tag))
        if sub is None or sub.role is not SubRole.SUBSCRIBER or sub.ended:
            self.reject_request(tx, request, 481, now)
            return
        if _event_package(request) != sub.event:
            self.reject_request(tx, request, 489, now)
            return
        if sub.dialog is None or (dialog_id is not None and dialog_id not in self._dialog_subs):
            self._dialog_from_notify(sub, request)
        self.respond_tx(tx, 200, now)
        state, expires, reason = _parse_subscription_state(
            request.get_header("Subscription-State") or "active")
        presence = self._presence_body(request)
        self.emit(Notified(sub.handle, state, request.content_type, request.body, presence))
        if state is SubscriptionState.TERMINATED:
            self._end_subscription(sub, reason)
        elif expires is not None:
            sub.expires_at_s = self._subscriber_deadline(now, expires)

    def _subscriber_deadline(self, now: float, expires_s: int) -> float:
        """The subscriber waits one Timer F longer than the notifier, so the notifier's
        final NOTIFY (after an unsubscribe or at expiry) can still arrive."""
        return now + expires_s + self.config.timers.timer_f_s

    def _dialog_from_notify(self, sub: Subscription, request: SipRequest) -> None:
        assert sub.subscribe is not None
        contacts = request.contacts
        dialog = Dialog(
            call_id=sub.call_id, local_tag=sub.local_tag,
            remote_tag=request.from_addr.tag or "",
            local_uri=NameAddr(sub.subscribe.from_addr.uri),
            remote_uri=NameAddr(sub.subscribe.to_addr.uri),
            remote_target=contacts[0].uri if contacts else sub.subscribe.uri,
            route_set=request.record_routes, local_seq=sub.subscribe.cseq.number,
            remote_seq=request.cseq.number, state=DialogState.CONFIRMED, is_uac=True)
        if sub.dialog is None:
            sub.dialog = dialog
        self._register_sub_dialog(sub, dialog)

    def _presence_body(self, request: SipRequest) -> PresenceDocument | None:
        ctype = (request.content_type or "").split(";")[0].strip().lower()
        if ctype != PIDF_CONTENT_TYPE or not request.body:
            return None
        try:
            return parse_pidf_untrusted(request.body)
        except DecodeError:
            self.count(UaCounter.BAD_PIDF)
            return None

    # ================================================================ outcomes
    def on_subscribe_response(self, ctx: ClientContext, response: SipResponse | None,
                              now: float) -> None:
        sub = self._subs.get(ctx.subscription.subscription_id) if ctx.subscription else None
        if response is not None and response.status < 200:
            return
        if response is None or response.status >= 300:
            status = 408 if response is None else response.status
            self.emit(RequestFailed(ctx.handle, "SUBSCRIBE", status,
                                    "timeout" if response is None else response.reason))
            if sub is not None and sub.dialog is None:
                self._end_subscription(sub, "rejected")
            return
        if sub is not None and sub.dialog is None and sub.subscribe is not None:
            dialog_id = response_dialog_id(response)
            if dialog_id is not None and dialog_id not in self._dialogs:
                sub.dialog = dialog_from_uac(sub.subscribe, response)
                self._register_sub_dialog(sub, sub.dialog)
        if sub is not None and response.expires is not None:
            sub.expires_at_s = self._subscriber_deadline(now, response.expires)
        self.emit(RequestSucceeded(ctx.handle, "SUBSCRIBE", response.status, response.expires))

    def on_notify_response(self, ctx: ClientContext, response: SipResponse | None,
                           now: float) -> None:
        if response is not None and response.status < 200:
            return
        status = 408 if response is None else response.status
        if 200 <= status < 300:
            self.emit(RequestSucceeded(ctx.handle, "NOTIFY", status))
            return
        self.emit(RequestFailed(ctx.handle, "NOTIFY", status,
                                "timeout" if response is None else response.reason))
        sub = self._subs.get(ctx.subscription.subscription_id) if ctx.subscription else None
        if sub is not None and status in (408, 481):      # RFC 6665 §4.2.2: gone
            self._end_subscription(sub, "deactivated")

    # ================================================================= timers
    def subscriptions_next_timer(self) -> float | None:
        return min((s.expires_at_s for s in self._subs.values() if not s.ended), default=None)

    def fire_subscription_timers(self, now: float) -> None:
        for sub in list(self._subs.values()):
            if sub.ended or sub.expires_at_s > now:
                continue
            if sub.role is SubRole.NOTIFIER and sub.dialog is not None:
                self._send_notify(sub.handle, b"", SubscriptionState.TERMINATED,
                                  RequestHandle(self.next_id()), now, "timeout")
            else:
                self._end_subscription(sub, "expired")

    def _register_sub_dialog(self, sub: Subscription, dialog: Dialog) -> None:
        self._dialogs[dialog.dialog_id] = dialog
        self._dialog_subs[dialog.dialog_id] = sub

    def _end_subscription(self, sub: Subscription, reason: str) -> None:
        if sub.ended:
            return
        sub.ended = True
        self._subs.pop(sub.handle.subscription_id, None)
        self._subscriber_subs.pop((sub.call_id, sub.local_tag), None)
        for dialog_id in [d for d, s in self._dialog_subs.items() if s is sub]:
            self._dialog_subs.pop(dialog_id, None)
            self._dialogs.pop(dialog_id, None)
        self.emit(SubscriptionEnded(sub.handle, reason))
