"""The gateway's built-in user agent (``ctl send``, ``ctl inbox``): a stock
:class:`~meshcomm.sip.ua.UserAgent` for the node's AoR at the virtual address
:data:`~meshcomm.node.gateway.types.BUILTIN_ADDR` (sans-IO).

The gateway exchanges SIP with it like with any local client (see
``SipGateway._pump_builtin``); this module keeps its inbox, its outbox of sends and turns
its events into :class:`InboxEntry` / :class:`SendResult` gateway events.

Each send is linked to the store-and-forward id of its MESSAGE (``message_id``): the
gateway shows the built-in UA's new MESSAGEs to :meth:`BuiltinUa.note_request`, which
matches them to the sends in order (the UA runs its commands first in, first out), so a
held send reports its ``msg_id`` and ``ctl outbox`` can name the send of a held message.
"""

from __future__ import annotations

import itertools
import random
from collections import OrderedDict, deque

from meshcomm.node.gateway.parts import message_id
from meshcomm.node.gateway.types import (
    BUILTIN_ADDR,
    MAX_INBOX,
    MAX_OUTBOX,
    Address,
    InboxEntry,
    SendResult,
    SendStatus,
)
from meshcomm.sip.message import SipRequest
from meshcomm.sip.ua import UserAgent
from meshcomm.sip.ua_events import (
    IncomingCall,
    IncomingMessage,
    RequestFailed,
    RequestSucceeded,
    SipDatagram,
    UaConfig,
)

BuiltinEvent = InboxEntry | SendResult
#: The built-in UA takes no calls (it has no media): it answers an INVITE with this.
BUILTIN_CALL_STATUS = 480


class BuiltinUa:
    """The node's own UA, its inbox and the outcomes of its sends."""

    def __init__(self, node_aor: str, gateway_addr: Address, rng: random.Random) -> None:
        self.ua = UserAgent(UaConfig(aor=node_aor, local_host=BUILTIN_ADDR[0],
                                     local_port=BUILTIN_ADDR[1], outbound_proxy=gateway_addr),
                            rng)
        self.inbox: deque[InboxEntry] = deque(maxlen=MAX_INBOX)
        self.outbox: OrderedDict[int, SendResult] = OrderedDict()
        self._ids = itertools.count(1)
        self._sends: dict[int, tuple[int, str]] = {}
        self._inbox_seq = 0
        #: Sends whose MESSAGE the UA has not sent yet: (send id, target AoR), in order.
        self._unsent: deque[tuple[int, str]] = deque()
        #: Store-and-forward message id <-> send id of the MESSAGEs sent (bounded).
        self._msg_of_send: OrderedDict[int, bytes] = OrderedDict()
        self._send_of_msg: dict[bytes, int] = {}
        #: The UA's next_timer() as last computed, and whether the UA may have changed
        #: since (its own next_timer scans its transactions: asked once per change, not
        #: on every input the gateway gets).
        self._timer: float | None = None
        self._timer_stale = True

    # ------------------------------------------------------------ driving the UA
    def receive(self, data: bytes, src: Address, now: float) -> None:
        self._timer_stale = True
        self.ua.receive(data, src, now)

    def to_send(self, now: float) -> list[SipDatagram]:
        out = self.ua.to_send(now)
        if out or (self._timer is not None and self._timer <= now):
            # Sending ran the UA's queued commands (its timer was "now" while they
            # waited) or moved its transactions on.
            self._timer_stale = True
        return out

    def on_timer(self, now: float) -> None:
        self._timer_stale = True
        self.ua.on_timer(now)

    def next_timer(self) -> float | None:
        if self._timer_stale:
            self._timer = self.ua.next_timer()
            self._timer_stale = False
        return self._timer

    def send_message(self, to_aor: str, text: str) -> int:
        """Queue a MESSAGE; returns the send id (its SendResult follows as an event)."""
        target = self.ua.parse_target(to_aor).aor.lower()
        handle = self.ua.message(to_aor, text)
        self._timer_stale = True
        send_id = next(self._ids)
        self._sends[handle.request_id] = (send_id, to_aor)
        self._unsent.append((send_id, target))
        while len(self._unsent) > MAX_OUTBOX:
            self._unsent.popleft()
        self._set_outbox(SendResult(send_id, to_aor, SendStatus.PENDING, None, ""))
        return send_id

    def note_request(self, request: SipRequest) -> None:
        """An out-of-dialog MESSAGE from this UA reached the gateway: link it to its send
        (the oldest unsent one for its target; retransmissions are already linked)."""
        msg_id = message_id(request)
        if msg_id in self._send_of_msg:
            return
        target = request.uri.aor.lower()
        for index, (send_id, send_target) in enumerate(self._unsent):
            if send_target == target:
                for _ in range(index + 1):          # earlier ones were never sent
                    self._unsent.popleft()
                self._link(send_id, msg_id)
                return

    def _link(self, send_id: int, msg_id: bytes) -> None:
        self._msg_of_send[send_id] = msg_id
        self._send_of_msg[msg_id] = send_id
        while len(self._msg_of_send) > MAX_OUTBOX:
            _, old = self._msg_of_send.popitem(last=False)
            self._send_of_msg.pop(old, None)

    def send_id_of(self, msg_id: bytes) -> int | None:
        """The send (``ctl send``) whose MESSAGE has store-and-forward id ``msg_id``."""
        return self._send_of_msg.get(msg_id)

    def outbox_pending(self) -> int:
        return sum(1 for r in self.outbox.values() if r.status is SendStatus.PENDING)

    def take_events(self, now: float) -> list[BuiltinEvent]:
        """Handle the UA's events: inbox entries, send outcomes (calls are refused)."""
        out: list[BuiltinEvent] = []
        while (event := self.ua.next_event()) is not None:
            if isinstance(event, IncomingMessage):
                self._inbox_seq += 1
                entry = InboxEntry(self._inbox_seq, event.from_addr.uri.aor,
                                   event.to_addr.uri.aor, event.content_type, event.body, now)
                self.inbox.append(entry)
                out.append(entry)
            elif isinstance(event, (RequestSucceeded, RequestFailed)):
                result = self._send_outcome(event)
                if result is not None:
                    out.append(result)
            elif isinstance(event, IncomingCall):
                self.ua.reject(event.call, BUILTIN_CALL_STATUS)
                self._timer_stale = True
        return out

    def _send_outcome(self, event: RequestSucceeded | RequestFailed) -> SendResult | None:
        found = self._sends.pop(event.request.request_id, None)
        if found is None:
            return None
        send_id, to_aor = found
        if isinstance(event, RequestSucceeded):
            if event.status == 202:                 # accepted for store-and-forward
                result = SendResult(send_id, to_aor, SendStatus.HELD, event.status, "",
                                    self._msg_of_send.get(send_id))
            else:
                result = SendResult(send_id, to_aor, SendStatus.DELIVERED, event.status, "")
        else:
            result = SendResult(send_id, to_aor, SendStatus.FAILED, event.status, event.reason)
        self._set_outbox(result)
        return result

    def _set_outbox(self, result: SendResult) -> None:
        self.outbox[result.send_id] = result
        while len(self.outbox) > MAX_OUTBOX:
            self.outbox.popitem(last=False)
