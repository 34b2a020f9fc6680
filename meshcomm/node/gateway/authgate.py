"""Digest authentication of local clients in the SIP gateway (issue 12 item 2), a mixin of
:class:`meshcomm.node.gateway.core.SipGateway`.

With :attr:`LocalAuth.auth` set (the runtime sets it whenever the gateway listens beyond
loopback, or ``[sip] require_auth`` asks for it on loopback), every new request of a
local client goes through :class:`~meshcomm.node.gateway.auth.DigestAuthenticator` right
after its transaction is opened and before anything looks at its names: unauthenticated,
it is answered 401/407 (or 503 for a host over its failure budget) through the
transaction (a retransmission gets the same answer); authenticated, it goes on with its
credentials for our realm removed (and, when its AoR is registered here from another
source, the registration follows it: gateway.identity). Requests from the mesh (signed
envelopes), the built-in UA and the configured upstream proxy are not challenged.
"""

from __future__ import annotations

import random
from typing import Final

from meshcomm.node.gateway.admission import Admission
from meshcomm.node.gateway.auth import DigestAuthenticator
from meshcomm.node.gateway.parts import Peer, ProxyTx
from meshcomm.node.gateway.proxy_state import ProxyTxInput as TxIn
from meshcomm.node.gateway.types import (
    BUILTIN_ADDR,
    Address,
    Direction,
    EnvelopeSlot,
    GatewayConfig,
)
from meshcomm.sip.build import build_response
from meshcomm.sip.message import SipRequest, SipResponse

#: Reason phrases of the answers given here (RFC 3261 §21.4.2, §21.4.8, §21.5.4).
STATUS_REASONS: Final = {401: "Unauthorized", 407: "Proxy Authentication Required",
                         503: "Service Unavailable"}


#: A challenged request's transaction answers its retransmissions this long (the
#: gateway's linger).
CHALLENGE_LINGER_S: Final = 8.0


class LocalAuth:
    """Mixin: needs the gateway's config, rng, journal and final-answer path."""

    config: GatewayConfig
    rng: random.Random
    admission: Admission
    #: The authenticator, or None: local clients are not authenticated (loopback default).
    auth: DigestAuthenticator | None = None

    # The gateway's own operations (SipGateway defines them).
    def _journal(self, direction: Direction, message: SipRequest | SipResponse, peer: Peer,
                 hops: int = 0, note: str = "", env: bytes = b"") -> EnvelopeSlot | None:
        raise NotImplementedError

    def _send(self, dest: Peer, data: bytes, slot: EnvelopeSlot | None = None) -> None:
        raise NotImplementedError

    def _to_tag(self, request: SipRequest) -> str | None:
        raise NotImplementedError

    def client_authenticated(self, aor: str, src: Address) -> None:
        raise NotImplementedError         # gateway.identity

    def _unauthenticated(self, tx: ProxyTx, now: float) -> bool:
        """Authenticate a new request's client: True when it was answered here (challenge
        or 503), False when it goes on (``tx.request`` without our credentials)."""
        src = tx.upstream
        if (self.auth is None or not isinstance(src, tuple) or src == BUILTIN_ADDR
                or src == self.config.upstream):
            return False
        decision = self.auth.check(tx.request, src[0], now)
        if decision.status == 0:
            tx.request = decision.request
            if decision.aor and tx.method != "REGISTER":
                self.client_authenticated(decision.aor, src)
            return False
        response = build_response(tx.request, decision.status,
                                  STATUS_REASONS.get(decision.status),
                                  to_tag=self._to_tag(tx.request),
                                  extra_headers=decision.headers)
        if self.auth.may_journal(now):
            self._journal(Direction.ORIGINATED, response, src, tx.hops, note=decision.reason)
        # Not the gateway's _finish: a challenged INVITE or BYE must not end the call (the
        # retry with credentials, or the dialog an unauthenticated BYE names, goes on),
        # and the answer is journaled only within the budget above.
        tx.step(TxIn.SEND_FINAL)
        tx.final_status = response.status
        self.admission.closed(tx.tx_id)
        tx.retransmit_at = None
        tx.deadline = now + CHALLENGE_LINGER_S
        tx.last_response = response        # a retransmitted request gets it again
        self._send(src, response.serialize())
        return True
