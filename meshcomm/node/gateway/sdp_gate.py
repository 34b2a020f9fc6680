"""The media hook of :class:`meshcomm.node.gateway.core.SipGateway`: an SDP body crossing
between a local client and the mesh goes through the media layer's ``rewrite_sdp``
(its own ports and keys in, the far side's out), and a body the media layer refuses
becomes the SIP status to refuse the message with (counted)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Final, TypeVar

from meshcomm.errors import DecodeError
from meshcomm.media.relay import MediaSetupError, SdpPath
from meshcomm.node.gateway.contacts import ContactMap
from meshcomm.node.gateway.counters import SDP_REFUSAL_COUNTERS, GatewayCounter, SdpRefusal
from meshcomm.node.gateway.parts import Peer, sdp_direction
from meshcomm.node.gateway.types import Address, SdpRewriter
from meshcomm.sip.message import SipRequest, SipResponse

log = logging.getLogger(__name__)
#: RFC 3261 §21.4.19 481 Call/Transaction Does Not Exist.
CALL_DOES_NOT_EXIST: Final = 481
_M = TypeVar("_M", SipRequest, SipResponse)


class SdpGate:
    """See the module docstring."""

    def __init__(self, rewrite_sdp: SdpRewriter, contacts: ContactMap,
                 counters: Counter[str], toward: Callable[[Address | None], str]) -> None:
        self.rewrite_sdp = rewrite_sdp
        self.contacts = contacts
        self.counters = counters
        #: the gateway's address as a client at an address reaches it (OwnHosts.toward)
        self.toward = toward

    def check(self, message: _M, src: Peer, dest: Peer) -> _M | int:
        """The message to send on, or the SIP status to refuse it with when the media
        layer refuses the SDP (400/488 bad SDP, 503 no media resources); counted."""
        direction = sdp_direction(message, src, dest)
        if direction is None:
            return message
        if direction is SdpPath.MESH_TO_CLIENT and self.contacts.call_ended(message.call_id):
            # A late 2xx (or its retransmission) from the far side of a call that ended
            # here: no media session again; refusing it ends the far side (ACK + BYE).
            self.counters[GatewayCounter.SDP_AFTER_END_REFUSED] += 1
            return CALL_DOES_NOT_EXIST
        client_host = self.toward(dest) if isinstance(dest, tuple) else ""
        try:
            body = self.rewrite_sdp(direction, message.call_id, message.body, client_host)
        except (DecodeError, MediaSetupError) as exc:
            self.counters[SDP_REFUSAL_COUNTERS[SdpRefusal.of(exc.reason)]] += 1
            log.info("SDP of call %s refused (%s): %s", message.call_id, direction.value, exc)
            return exc.status_hint
        return message if body == message.body else message.with_body(body)
