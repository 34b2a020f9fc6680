"""Calls of the user-agent core: INVITE, ACK, BYE, CANCEL and re-INVITE (RFC 3261 §9,
§13-15, RFC 3264 offer/answer). Mixed into :class:`meshcomm.sip.ua.UserAgent`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.sip.build import build_cancel, build_request, new_call_id
from meshcomm.sip.call_state import (
    INITIAL_CALL_STATE,
    CallInput,
    CallState,
    call_allows,
    call_transition,
)
from meshcomm.sip.dialog import (
    Dialog,
    DialogId,
    DialogInput,
    DialogState,
    dialog_from_uac,
    dialog_from_uas,
    incoming_dialog_id,
    response_dialog_id,
)
from meshcomm.sip.message import NameAddr, SipRequest, SipResponse
from meshcomm.sip.sdp import (
    Direction,
    NotAcceptable,
    SessionDescription,
    answer_offer,
    parse_sdp_untrusted,
    with_direction,
)
from meshcomm.sip.transaction import Transaction, TxState, server_key
from meshcomm.sip.ua_base import ALLOW_HEADER, ClientContext, Purpose, UaBase
from meshcomm.sip.ua_events import (
    Address,
    CallEnded,
    CallEndReason,
    CallEstablished,
    CallHandle,
    CallRinging,
    CallUpdated,
    IncomingCall,
    RequestFailed,
    RequestHandle,
    RequestSucceeded,
)
from meshcomm.sip.uri import SipUri

log = logging.getLogger(__name__)
SDP_CONTENT_TYPE = "application/sdp"
#: §8.1.1.5: initial CSeq of a UAS's own in-dialog requests is chosen below this.
INITIAL_CSEQ_MAX = 2**16


@dataclass(eq=False, slots=True)
class Call:
    """One call. ``state`` moves only through the tables of :mod:`meshcomm.sip.call_state`
    (``outgoing`` picks the caller's or the callee's table)."""

    handle: CallHandle
    outgoing: bool
    state: CallState
    invite: SipRequest
    invite_tx: Transaction
    local_tag: str
    dialog: Dialog | None = None
    local_sdp: SessionDescription | None = None
    remote_sdp: SessionDescription | None = None
    ringing_reported: bool = False                # CallRinging emitted (once per call)
    on_hold: bool = False
    reinvite: SipRequest | None = None            # our re-INVITE in progress
    reinvite_offer: SessionDescription | None = None
    acks: dict[int, tuple[bytes, Address]] = field(default_factory=dict)   # cseq -> ACK
    ring_deadline_s: float | None = None          # UAS: unanswered-call guard (Timer C)

    def allows(self, event: CallInput) -> bool:
        return call_allows(self.outgoing, self.state, event)

    def step(self, event: CallInput) -> None:
        """Apply ``event``; LocalProtocolError when the call's table has no entry."""
        self.state = call_transition(self.outgoing, self.state, event)

    @property
    def cancel_requested(self) -> bool:
        return self.state in (CallState.CANCEL_PENDING, CallState.CANCELLING)


def _sdp_or_none(body: bytes) -> SessionDescription | None:
    if not body:
        return None
    try:
        return parse_sdp_untrusted(body)
    except DecodeError:
        return None


def _accepts_sdp(request: SipRequest) -> bool:
    """Our answer carries SDP: the peer's Accept (if any) must allow it."""
    values = request.header_values("Accept")
    if not values:
        return True
    types = {v.split(";")[0].strip().lower() for v in values}
    return bool(types & {SDP_CONTENT_TYPE, "application/*", "*/*"}) or types == {""}


class CallsMixin(UaBase):
    """INVITE-related commands and request/response handling."""

    def _init_calls(self) -> None:
        self._calls: dict[int, Call] = {}
        self._invite_calls: dict[int, Call] = {}      # server INVITE tx id -> call
        self._dialog_calls: dict[DialogId, Call] = {}

    # ================================================================ commands
    def invite(self, to: str, sdp_offer: SessionDescription) -> CallHandle:
        """Call ``to`` with ``sdp_offer``; outcome events: CallRinging, CallEstablished,
        CallEnded."""
        uri = self.parse_target(to)
        handle = CallHandle(self.next_id())
        self._commands.append(lambda now: self._do_invite(handle, uri, sdp_offer, now))
        return handle

    def answer(self, call: CallHandle, sdp: SessionDescription) -> None:
        """Answer an incoming call with our SDP (an answer, or an offer if the INVITE had
        none)."""
        self._commands.append(lambda now: self._do_answer(call, sdp, now))

    def reject(self, call: CallHandle, status: int = 486) -> None:
        if not 300 <= status <= 699:
            raise LocalProtocolError("reject needs a 3xx-6xx status")
        self._commands.append(lambda now: self._do_reject(call, status, now))

    def bye(self, call: CallHandle) -> RequestHandle:
        """Hang up: BYE when established, CANCEL when still ringing out, 603 when an
        incoming call was not answered."""
        handle = RequestHandle(self.next_id())
        self._commands.append(lambda now: self._do_bye(call, handle, now))
        return handle

    def cancel(self, call: CallHandle) -> None:
        """CANCEL an outgoing INVITE (§9.1); sent once a provisional response arrived."""
        self._commands.append(lambda now: self._do_cancel(call, now))

    def reinvite(self, call: CallHandle, sdp: SessionDescription) -> RequestHandle:
        """Send a re-INVITE with a new offer (hold/resume, §14.1)."""
        handle = RequestHandle(self.next_id())
        self._commands.append(lambda now: self._do_reinvite(call, sdp, handle, now))
        return handle

    def hold(self, call: CallHandle) -> RequestHandle:
        """Re-INVITE with our audio set to sendonly (RFC 3264 §8.4)."""
        return self._hold(call, True)

    def resume(self, call: CallHandle) -> RequestHandle:
        return self._hold(call, False)

    def _hold(self, call: CallHandle, on_hold: bool) -> RequestHandle:
        state = self._calls.get(call.call_id)
        if state is None or state.local_sdp is None:
            raise LocalProtocolError("no such call, or no local SDP to modify")
        state.on_hold = on_hold
        direction = Direction.SENDONLY if on_hold else Direction.SENDRECV
        return self.reinvite(call, with_direction(state.local_sdp, direction))

    def call_state(self, call: CallHandle) -> CallState | None:
        state = self._calls.get(call.call_id)
        return None if state is None else state.state

    # ========================================================== command bodies
    def _do_invite(self, handle: CallHandle, uri: SipUri, offer: SessionDescription,
                   now: float) -> None:
        tag = self.new_tag()
        request = build_request(
            "INVITE", uri, from_addr=self.local_addr().with_params(tag=tag),
            to_addr=NameAddr(uri), call_id=new_call_id(self.rng, self.config.local_host),
            cseq=1, via=self.new_via(), contact=self.contact(),
            extra_headers=self.common_headers(), body=offer.serialize(),
            content_type=SDP_CONTENT_TYPE)
        ctx = self.start_client(request, self.destination(uri), Purpose.INVITE, now,
                                call=handle)
        self._calls[handle.call_id] = Call(handle, True, INITIAL_CALL_STATE[True], request,
                                           ctx.tx, tag, local_sdp=offer)

    def _incoming_call(self, call: CallHandle) -> Call | None:
        state = self._calls.get(call.call_id)
        if (state is None or not state.allows(CallInput.ANSWER)
                or state.invite_tx.state is not TxState.PROCEEDING):
            log.info("call %s cannot be answered or rejected now", call.call_id)
            return None
        return state

    def _do_answer(self, call: CallHandle, sdp: SessionDescription, now: float) -> None:
        state = self._incoming_call(call)
        if state is None:
            return
        response = self.respond_tx(state.invite_tx, 200, now, to_tag=state.local_tag,
                                   contact=True, headers=[("Allow", ALLOW_HEADER)],
                                   body=sdp.serialize(), content_type=SDP_CONTENT_TYPE)
        dialog = state.dialog or self._uas_dialog(state)
        dialog.on_input(DialogInput.SUCCESS)
        state.local_sdp = sdp
        state.step(CallInput.ANSWER)
        self.start_2xx_retransmit(dialog, call, response, state.invite_tx.peer, now)

    def _do_reject(self, call: CallHandle, status: int, now: float) -> None:
        state = self._incoming_call(call)
        if state is None:
            return
        self.respond_tx(state.invite_tx, status, now, to_tag=state.local_tag)
        self._end_call(state, CallInput.REJECT, CallEndReason.DECLINED_LOCALLY, status)

    def _do_bye(self, call: CallHandle, handle: RequestHandle, now: float) -> None:
        state = self._calls.get(call.call_id)
        if state is None or state.state is CallState.ENDED:
            self.emit(RequestFailed(handle, "BYE", 481, "no such call"))
            return
        if state.allows(CallInput.BYE_SENT):                # answered or established
            self._bye_and_end(state, CallEndReason.LOCAL_BYE, None, now, handle)
        elif state.outgoing:                                # §15: CANCEL before the answer
            self._do_cancel(call, now)
        else:                                               # an unanswered incoming call
            self._do_reject(call, 603, now)

    def _bye_and_end(self, state: Call, reason: CallEndReason, status: int | None,
                     now: float, handle: RequestHandle | None = None) -> None:
        """§15.1.1: send BYE on the call's dialog and end the call (BYE_SENT)."""
        self._send_bye(state, now, handle)
        self._end_call(state, CallInput.BYE_SENT, reason, status)

    def _send_bye(self, state: Call, now: float, handle: RequestHandle | None = None) -> None:
        dialog = state.dialog
        if dialog is None:
            return
        request = dialog.make_request("BYE", via=self.new_via(), contact=None,
                                      extra_headers=[("User-Agent", self.config.user_agent)])
        self.start_client(request, self.destination(dialog.next_hop_uri()), Purpose.BYE, now,
                          handle=handle, call=state.handle)

    def _do_cancel(self, call: CallHandle, now: float) -> None:
        state = self._calls.get(call.call_id)
        if state is None or not state.allows(CallInput.CANCEL):
            return
        state.step(CallInput.CANCEL)
        if state.invite_tx.state is TxState.PROCEEDING:   # §9.1: only after a 1xx
            self._send_cancel(state, now)

    def _send_cancel(self, state: Call, now: float) -> None:
        if state.state is not CallState.CANCEL_PENDING:
            return
        state.step(CallInput.CANCEL_SENT)
        self.start_client(build_cancel(state.invite), state.invite_tx.peer, Purpose.CANCEL,
                          now, call=state.handle)

    def _do_reinvite(self, call: CallHandle, sdp: SessionDescription, handle: RequestHandle,
                     now: float) -> None:
        state = self._calls.get(call.call_id)
        if (state is None or state.state is not CallState.ESTABLISHED or state.dialog is None
                or state.reinvite is not None):
            self.emit(RequestFailed(handle, "INVITE", 491, "call busy or not established"))
            return
        dialog = state.dialog
        request = dialog.make_request("INVITE", via=self.new_via(), contact=self.contact(),
                                      extra_headers=self.common_headers(),
                                      body=sdp.serialize(), content_type=SDP_CONTENT_TYPE)
        state.reinvite, state.reinvite_offer = request, sdp
        self.start_client(request, self.destination(dialog.next_hop_uri()), Purpose.REINVITE,
                          now, handle=handle, call=call)

    # ================================================= responses (UAC side)
    def on_invite_response(self, ctx: ClientContext, response: SipResponse | None,
                           now: float) -> None:
        """Outcome of our initial INVITE (None: Timer B fired)."""
        state = self._calls.get(ctx.call.call_id) if ctx.call else None
        if state is None:
            return
        if response is None:
            if state.allows(CallInput.FAILURE):
                reason = (CallEndReason.CANCELLED if state.cancel_requested
                          else CallEndReason.TIMEOUT)
                self._end_call(state, CallInput.FAILURE, reason, 408)
            return
        if response.status < 200:
            self._invite_provisional(state, response, now)
        elif response.status < 300:
            self._invite_2xx(state, state.invite, response, now)
        elif state.allows(CallInput.FAILURE):
            reason = (CallEndReason.CANCELLED if state.cancel_requested
                      else CallEndReason.REJECTED)
            self._end_call(state, CallInput.FAILURE, reason, response.status)

    def _invite_provisional(self, state: Call, response: SipResponse, now: float) -> None:
        if response.to_addr.tag is not None and state.dialog is None:
            state.dialog = dialog_from_uac(state.invite, response)
            self._register_call_dialog(state, state.dialog)
        if state.cancel_requested:
            self._send_cancel(state, now)
        if state.allows(CallInput.PROVISIONAL):
            state.step(CallInput.PROVISIONAL)
        if response.status > 100 and not state.ringing_reported:
            state.ringing_reported = True
            self.emit(CallRinging(state.handle, response.status))

    def _invite_2xx(self, state: Call, request: SipRequest, response: SipResponse,
                    now: float) -> None:
        """§13.2.2.4: ACK every 2xx (retransmissions too); confirm the dialog once."""
        dialog_id = response_dialog_id(response)
        if dialog_id is None:
            return
        dialog = state.dialog
        if dialog is None or dialog.dialog_id != dialog_id:
            fresh = dialog_from_uac(request, response)
            if dialog is not None and dialog.state is not DialogState.EARLY:
                self._ack_and_bye_fork(fresh, now)      # a 2xx from a second fork
                return
            if dialog is not None:
                self._dialogs.pop(dialog.dialog_id, None)
                self._dialog_calls.pop(dialog.dialog_id, None)
            state.dialog = dialog = fresh
            self._register_call_dialog(state, fresh)
        else:
            dialog.on_response(request, response)
        self._ack(dialog, response.cseq.number, state)
        if not state.allows(CallInput.SUCCESS):
            return                                      # a retransmitted 2xx
        cancelled = state.cancel_requested
        state.step(CallInput.SUCCESS)
        if cancelled:                                   # CANCEL lost the race (§9.1)
            self._bye_and_end(state, CallEndReason.CANCELLED, 200, now)
            return
        state.remote_sdp = _sdp_or_none(response.body)
        self.emit(CallEstablished(state.handle, state.remote_sdp))

    def _ack(self, dialog: Dialog, cseq: int, state: Call) -> None:
        ack = state.acks.get(cseq)
        if ack is None:
            request = dialog.make_request("ACK", via=self.new_via(), contact=None, cseq=cseq)
            ack = (request.serialize(), self.destination(dialog.next_hop_uri()))
            state.acks[cseq] = ack
        self.send_raw(*ack)

    def _ack_and_bye_fork(self, dialog: Dialog, now: float) -> None:
        ack = dialog.make_request("ACK", via=self.new_via(), contact=None,
                                  cseq=dialog.local_seq)
        self.send_raw(ack.serialize(), self.destination(dialog.next_hop_uri()))
        self._fork_bye(dialog, now)

    def _fork_bye(self, dialog: Dialog, now: float) -> None:
        request = dialog.make_request("BYE", via=self.new_via(), contact=None)
        self.start_client(request, self.destination(dialog.next_hop_uri()), Purpose.BYE, now)
        self._dialogs.pop(dialog.dialog_id, None)

    def on_stray_2xx(self, response: SipResponse) -> None:
        """A 2xx after the INVITE transaction ended: ACK it again (§13.2.2.4)."""
        dialog_id = response_dialog_id(response)
        state = self._dialog_calls.get(dialog_id) if dialog_id else None
        ack = None if state is None else state.acks.get(response.cseq.number)
        if ack is not None:
            self.send_raw(*ack)

    def on_reinvite_response(self, ctx: ClientContext, response: SipResponse | None,
                             now: float) -> None:
        state = self._calls.get(ctx.call.call_id) if ctx.call else None
        if state is None or state.dialog is None:
            return
        if state.state is CallState.ENDED:
            state.reinvite = state.reinvite_offer = None
        if state.reinvite is None or ctx.tx.request is not state.reinvite:
            if response is not None and 200 <= response.status < 300:
                self._ack(state.dialog, response.cseq.number, state)   # late/retransmitted
            return
        if response is not None and response.status < 200:
            return
        request, offer = state.reinvite, state.reinvite_offer
        state.reinvite = state.reinvite_offer = None
        if response is not None and response.status < 300:
            state.dialog.on_response(request, response)
            self._ack(state.dialog, response.cseq.number, state)
            state.local_sdp, state.remote_sdp = offer, _sdp_or_none(response.body)
            self.emit(CallUpdated(state.handle, state.local_sdp, state.remote_sdp))
            self.emit(RequestSucceeded(ctx.handle, "INVITE", response.status))
            return
        status = 408 if response is None else response.status
        self.emit(RequestFailed(ctx.handle, "INVITE", status,
                                "timeout" if response is None else response.reason))
        if status in (408, 481):                    # §14.1: the dialog is gone
            self._bye_and_end(state, CallEndReason.TIMEOUT, status, now)

    # ================================================== requests (UAS side)
    def on_invite(self, request: SipRequest, tx: Transaction, now: float) -> None:
        self.respond_tx(tx, 100, now)
        if request.to_addr.tag is not None:
            self._on_reinvite(request, tx, now)
            return
        if not _accepts_sdp(request):              # §21.4.7; RFC 4475 §3.3.15
            self.reject_request(tx, request, 406, now)
            return
        offer: SessionDescription | None = None
        if request.body:
            try:
                offer = parse_sdp_untrusted(request.body)
            except DecodeError:
                self.reject_request(tx, request, 400, now, reason="Bad SDP")
                return
            probe = answer_offer(offer, address=self.config.local_host, rtp_port=9,
                                 session_id=0, policy=self.config.audio)
            if isinstance(probe, NotAcceptable):
                self.reject_request(tx, request, 488, now)
                return
        handle = CallHandle(self.next_id())
        state = Call(handle, False, INITIAL_CALL_STATE[False], request, tx, self.new_tag(),
                     remote_sdp=offer, ring_deadline_s=now + self.config.timers.timer_c_s)
        self._calls[handle.call_id] = state
        self._invite_calls[tx.tx_id] = state
        if self.config.auto_ringing:
            self.respond_tx(tx, 180, now, to_tag=state.local_tag, contact=True)
            state.dialog = self._uas_dialog(state, early=True)
        self.emit(IncomingCall(handle, request.from_addr, request.to_addr, offer))

    def _uas_dialog(self, state: Call, early: bool = False) -> Dialog:
        dialog = dialog_from_uas(state.invite, state.local_tag, early=early,
                                 initial_local_seq=self.rng.randint(1, INITIAL_CSEQ_MAX))
        state.dialog = dialog
        self._register_call_dialog(state, dialog)
        return dialog

    def _on_reinvite(self, request: SipRequest, tx: Transaction, now: float) -> None:
        dialog_id = incoming_dialog_id(request)
        state = self._dialog_calls.get(dialog_id) if dialog_id else None
        if state is None or state.dialog is None:
            self.reject_request(tx, request, 481, now)
            return
        if state.reinvite is not None:              # §14.2: glare
            self.reject_request(tx, request, 491, now)
            return
        if state.state is not CallState.ESTABLISHED:  # previous 2xx not yet ACKed
            self.reject_request(tx, request, 500, now, headers=[("Retry-After", "1")])
            return
        answer = self._answer_reoffer(state, request)
        if answer is None:
            self.reject_request(tx, request, 488, now)
            return
        response = self.respond_tx(tx, 200, now, contact=True, body=answer.serialize(),
                                content_type=SDP_CONTENT_TYPE)
        state.local_sdp = answer
        state.remote_sdp = _sdp_or_none(request.body) or state.remote_sdp
        self.start_2xx_retransmit(state.dialog, state.handle, response, tx.peer, now)
        self.emit(CallUpdated(state.handle, state.local_sdp, state.remote_sdp))

    def _answer_reoffer(self, state: Call, request: SipRequest) -> SessionDescription | None:
        local = state.local_sdp
        offer = _sdp_or_none(request.body)
        if local is None or offer is None:
            return None if offer is None and local is None else local
        address = local.connection.address if local.connection else self.config.local_host
        port = next((m.port for m in local.media if m.media == "audio"), 9)
        wanted = Direction.SENDONLY if state.on_hold else Direction.SENDRECV
        result = answer_offer(offer, address=address, rtp_port=port,
                              session_id=int(local.origin.session_id)
                              if local.origin.session_id.isdigit() else 0,
                              session_version=local.origin.session_version + 1,
                              policy=self.config.audio, direction=wanted,
                              username=local.origin.username)
        return None if isinstance(result, NotAcceptable) else result[0]

    def on_ack(self, request: SipRequest, now: float) -> None:
        """An ACK that matched no transaction: the ACK for our 2xx (§13.3.1.4)."""
        dialog_id = incoming_dialog_id(request)
        if dialog_id is None:
            return
        pending = self._pending_2xx.get(dialog_id)
        if pending is not None and pending.cseq == request.cseq.number:
            del self._pending_2xx[dialog_id]
        state = self._dialog_calls.get(dialog_id)
        if state is None or not state.allows(CallInput.ACK):
            return
        state.step(CallInput.ACK)
        if request.body and state.remote_sdp is None:
            state.remote_sdp = _sdp_or_none(request.body)
        self.emit(CallEstablished(state.handle, state.remote_sdp))

    def on_bye(self, request: SipRequest, tx: Transaction, now: float) -> None:
        dialog_id = incoming_dialog_id(request)
        state = self._dialog_calls.get(dialog_id) if dialog_id else None
        if state is None:
            self.reject_request(tx, request, 481, now)
            return
        self.respond_tx(tx, 200, now)
        if (not state.outgoing and state.state is CallState.EARLY
                and state.invite_tx.state is TxState.PROCEEDING):
            self.respond_tx(state.invite_tx, 487, now, to_tag=state.local_tag)
        if state.allows(CallInput.BYE_RECEIVED):
            self._end_call(state, CallInput.BYE_RECEIVED, CallEndReason.REMOTE_BYE, None)

    def on_cancel(self, request: SipRequest, tx: Transaction, now: float) -> None:
        """§9.2: find the INVITE's server transaction; 481 when there is none."""
        invite_tx = self.txl.find(server_key(request, "INVITE"))
        if invite_tx is None or invite_tx.is_client:
            self.reject_request(tx, request, 481, now)
            return
        state = self._invite_calls.get(invite_tx.tx_id)
        self.respond_tx(tx, 200, now, to_tag=state.local_tag if state else None)
        if (state is not None and state.allows(CallInput.CANCEL_RECEIVED)
                and invite_tx.state is TxState.PROCEEDING):
            self.respond_tx(invite_tx, 487, now, to_tag=state.local_tag)
            self._end_call(state, CallInput.CANCEL_RECEIVED, CallEndReason.CANCELLED, 487)

    # ============================================================ plumbing
    def _register_call_dialog(self, state: Call, dialog: Dialog) -> None:
        self._dialogs[dialog.dialog_id] = dialog
        self._dialog_calls[dialog.dialog_id] = state

    def _end_call(self, state: Call, event: CallInput, reason: CallEndReason,
                  status: int | None) -> None:
        state.step(event)
        if state.dialog is not None:
            state.dialog.state = DialogState.TERMINATED
            self._dialogs.pop(state.dialog.dialog_id, None)
            self._pending_2xx.pop(state.dialog.dialog_id, None)
        self.emit(CallEnded(state.handle, reason, status))

    def on_2xx_gave_up(self, call: CallHandle, now: float) -> None:
        """§13.3.1.4: no ACK for 64*T1 -- confirm, then end the session with BYE."""
        state = self._calls.get(call.call_id)
        if state is not None and state.allows(CallInput.ACK_TIMEOUT):
            self._send_bye(state, now)
            self._end_call(state, CallInput.ACK_TIMEOUT, CallEndReason.TIMEOUT, None)

    def calls_next_timer(self) -> float | None:
        return min((c.ring_deadline_s for c in self._calls.values()
                    if c.ring_deadline_s is not None and c.state is CallState.EARLY),
                   default=None)

    def fire_call_timers(self, now: float) -> None:
        """An incoming call nobody answered within Timer C gets 480 (its caller may never
        have been able to CANCEL: §9.1 forbids it before a provisional arrived)."""
        for state in list(self._calls.values()):
            deadline = state.ring_deadline_s
            if (deadline is None or deadline > now or state.state is not CallState.EARLY
                    or state.invite_tx.state is not TxState.PROCEEDING):
                continue
            state.ring_deadline_s = None
            self.respond_tx(state.invite_tx, 480, now, to_tag=state.local_tag)
            self._end_call(state, CallInput.REJECT, CallEndReason.TIMEOUT, 480)

    def sweep_calls(self) -> None:
        """Forget ended calls whose transactions and dialogs are gone."""
        for call_id, state in list(self._calls.items()):
            if state.state is CallState.ENDED and state.invite_tx.terminated:
                del self._calls[call_id]
                self._invite_calls.pop(state.invite_tx.tx_id, None)
                if state.dialog is not None:
                    self._dialog_calls.pop(state.dialog.dialog_id, None)
