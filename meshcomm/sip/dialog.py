"""SIP dialogs (RFC 3261 §12): creation, route sets, target refresh and CSeq rules.

A dialog is created by a UAC from a 2xx or a 1xx-with-To-tag response (§12.1.2; the
latter makes an *early* dialog) and by a UAS when it sends such a response (§12.1.1).
:meth:`Dialog.make_request` builds in-dialog requests (BYE, re-INVITE, NOTIFY...) per
§12.2.1.1, including strict-routing next hops; :meth:`Dialog.check_request` applies the
UAS rules of §12.2.2 (CSeq ordering, remote target refresh).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from meshcomm.errors import LocalProtocolError
from meshcomm.sip.build import build_request
from meshcomm.sip.message import NameAddr, SipRequest, SipResponse, Via
from meshcomm.sip.uri import SipUri

#: §8.1.1.5: CSeq numbers must stay below 2**31.
MAX_CSEQ = 2**31 - 1
#: Methods that refresh the remote target (§12.2: re-INVITE; RFC 6665 §4.1.2.2: SUBSCRIBE
#: and NOTIFY of an event package; UPDATE per RFC 3311).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})


class DialogState(enum.Enum):
    EARLY = "early"           # §12.1: from a 1xx with a To tag
    CONFIRMED = "confirmed"   # §12.1: from a 2xx
    TERMINATED = "terminated"


class DialogInput(enum.Enum):
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "300-699"   # a non-2xx final to the dialog-creating request (§12.3)
    BYE = "bye"           # BYE sent or received (§15)


#: §12.1 / §12.3 / §15: dialog state transitions.
DIALOG_TABLE: dict[tuple[DialogState, DialogInput], DialogState] = {
    (DialogState.EARLY, DialogInput.PROVISIONAL): DialogState.EARLY,
    (DialogState.EARLY, DialogInput.SUCCESS): DialogState.CONFIRMED,
    (DialogState.EARLY, DialogInput.FAILURE): DialogState.TERMINATED,
    (DialogState.EARLY, DialogInput.BYE): DialogState.TERMINATED,
    (DialogState.CONFIRMED, DialogInput.SUCCESS): DialogState.CONFIRMED,
    (DialogState.CONFIRMED, DialogInput.BYE): DialogState.TERMINATED,
}


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID, local tag and remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str


def incoming_dialog_id(request: SipRequest) -> DialogId | None:
    """The id a received in-dialog request names (our tag is in To), or None."""
    to_tag, from_tag = request.to_addr.tag, request.from_addr.tag
    if to_tag is None:
        return None
    return DialogId(request.call_id, to_tag, from_tag or "")


def response_dialog_id(response: SipResponse) -> DialogId | None:
    """The id a response to our request names (our tag is in From), or None."""
    from_tag, to_tag = response.from_addr.tag, response.to_addr.tag
    if to_tag is None or from_tag is None:
        return None
    return DialogId(response.call_id, from_tag, to_tag)


@dataclass(eq=False, slots=True)
class Dialog:
    """Dialog state (§12). Mutable, owned by the UA core."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr          # From of our requests (without tag)
    remote_uri: NameAddr         # To of our requests (without tag)
    remote_target: SipUri
    route_set: tuple[NameAddr, ...]
    local_seq: int
    remote_seq: int | None
    state: DialogState
    is_uac: bool

    @property
    def dialog_id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    def on_input(self, event: DialogInput) -> DialogState:
        """Apply a state input; inputs with no table entry leave the state unchanged."""
        self.state = DIALOG_TABLE.get((self.state, event), self.state)
        return self.state

    # ------------------------------------------------------------- UAC side (§12.2.1)
    def next_hop_uri(self) -> SipUri:
        """The URI the next in-dialog request is sent towards (§12.2.1.1, §8.1.2)."""
        if self.route_set:
            return self.route_set[0].uri
        return self.remote_target

    def _uri_and_routes(self) -> tuple[SipUri, tuple[NameAddr, ...]]:
        if not self.route_set or self.route_set[0].uri.has_param("lr"):
            return self.remote_target, self.route_set                 # loose routing
        first = self.route_set[0].uri                                   # strict routing
        request_uri = SipUri(scheme=first.scheme, user=first.user, host=first.host,
                             port=first.port, params=tuple(
                                 p for p in first.params if p[0] not in ("method", "maddr",
                                                                         "ttl", "transport",
                                                                         "lr")))
        return request_uri, (*self.route_set[1:], NameAddr(self.remote_target))

    def make_request(self, method: str, *, via: Via, contact: NameAddr | None,
                     extra_headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
                     content_type: str | None = None,
                     cseq: int | None = None) -> SipRequest:
        """An in-dialog request (§12.2.1.1). ACK and CANCEL reuse a given ``cseq``; every
        other method takes the next local sequence number."""
        if self.state is DialogState.TERMINATED and method != "ACK":
            raise LocalProtocolError("dialog is terminated")   # a late 2xx is still ACKed
        if cseq is None:
            if method in ("ACK", "CANCEL"):
                raise LocalProtocolError(f"{method} needs the CSeq of its INVITE")
            if self.local_seq >= MAX_CSEQ:
                raise LocalProtocolError("local CSeq exhausted")
            self.local_seq += 1
            cseq = self.local_seq
        request_uri, routes = self._uri_and_routes()
        return build_request(
            method, request_uri,
            from_addr=self.local_uri.with_params(tag=self.local_tag),
            to_addr=self.remote_uri.with_params(tag=self.remote_tag),
            call_id=self.call_id, cseq=cseq, via=via, contact=contact, routes=routes,
            extra_headers=extra_headers, body=body, content_type=content_type)

    def on_response(self, request: SipRequest, response: SipResponse) -> None:
        """Update state from a response to our request within the dialog (§12.1.2,
        §12.2.1.2): a 2xx to a target refresh request replaces the remote target."""
        if 200 <= response.status < 300:
            if request.method in TARGET_REFRESH_METHODS and response.contacts:
                self.remote_target = response.contacts[0].uri
            if request.method == "INVITE":
                self.on_input(DialogInput.SUCCESS)
        elif response.status < 200 and request.method == "INVITE":
            self.on_input(DialogInput.PROVISIONAL)

    # ------------------------------------------------------------- UAS side (§12.2.2)
    def check_request(self, request: SipRequest) -> int | None:
        """Apply §12.2.2 to a received in-dialog request: None when accepted, else the
        status to answer (500 for an out-of-order CSeq). ACK and CANCEL carry the CSeq
        of their INVITE and are not ordered."""
        if request.method in ("ACK", "CANCEL"):
            return None
        number = request.cseq.number
        if self.remote_seq is not None and number <= self.remote_seq:
            return 500
        self.remote_seq = number
        if request.method in TARGET_REFRESH_METHODS and request.contacts:
            self.remote_target = request.contacts[0].uri
        return None


def dialog_from_uac(request: SipRequest, response: SipResponse) -> Dialog:
    """§12.1.2: the UAC's dialog from a 1xx (with To tag) or 2xx to ``request``."""
    to_tag, from_tag = response.to_addr.tag, request.from_addr.tag
    if to_tag is None or from_tag is None:
        raise LocalProtocolError("a dialog needs both tags")
    contacts = response.contacts
    target = contacts[0].uri if contacts else request.uri
    state = DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY
    return Dialog(
        call_id=request.call_id, local_tag=from_tag, remote_tag=to_tag,
        local_uri=NameAddr(request.from_addr.uri, request.from_addr.display_name),
        remote_uri=NameAddr(request.to_addr.uri, request.to_addr.display_name),
        remote_target=target, route_set=tuple(reversed(response.record_routes)),
        local_seq=request.cseq.number, remote_seq=None, state=state, is_uac=True)


def dialog_from_uas(request: SipRequest, local_tag: str, *, initial_local_seq: int,
                    early: bool = False) -> Dialog:
    """§12.1.1: the UAS's dialog for ``request`` answered with To tag ``local_tag``."""
    contacts = request.contacts          # RFC 2543 peers may omit Contact: use From
    return Dialog(
        call_id=request.call_id, local_tag=local_tag,
        remote_tag=request.from_addr.tag or "",
        local_uri=NameAddr(request.to_addr.uri, request.to_addr.display_name),
        remote_uri=NameAddr(request.from_addr.uri, request.from_addr.display_name),
        remote_target=contacts[0].uri if contacts else request.from_addr.uri,
        route_set=request.record_routes,
        local_seq=initial_local_seq, remote_seq=request.cseq.number,
        state=DialogState.EARLY if early else DialogState.CONFIRMED, is_uac=False)
