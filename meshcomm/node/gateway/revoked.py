"""A revoked node's gateway stops serving its local clients (issue 12 point 4), a mixin of
:class:`meshcomm.node.gateway.core.SipGateway`.

Once the trust records this node holds revoke its own device key, the credential it runs
with, or (``agency`` policy) that credential's agency, every other node drops its
bindings and its traffic. Its gateway then says so instead of answering 200 to a
REGISTER that takes nothing anywhere: a REGISTER or an out-of-dialog request from a local
client (the built-in UA's ``ctl send`` too) is answered ``403 Device Revoked`` (or
``Credential Revoked``, ``Agency Revoked``) through its transaction (a retransmission gets
the same answer), counted (``revoked_refused``) and journaled: a ``sip.drop`` record with
the reason and the 403, at most :data:`JOURNAL_BURST` at once and
:data:`JOURNAL_RATE_PER_S` after (the rest counted, ``revoked_journal_suppressed``).

Requests within a dialog pass (a BYE still ends a call), and so do requests from the
mesh (other nodes no longer send any). The check costs one length test while the node
holds no trust record, a cached verdict after (:meth:`TrustSync.own_refusal`); ``ctl
status`` shows the same verdict as ``trust.this_node_revoked``.
"""

from __future__ import annotations

from collections import Counter, deque
from enum import StrEnum
from typing import Final

from meshcomm.journal.events import JournalRecord
from meshcomm.node.gateway.admission import Admission
from meshcomm.node.gateway.parts import AwaitingEnvelope, Peer, ProxyTx, drop_record
from meshcomm.node.gateway.proxy_state import ProxyTxInput as TxIn
from meshcomm.node.gateway.types import Direction, EnvelopeSlot, InboxEntry, SendResult
from meshcomm.node.mesh import MeshNode
from meshcomm.overlay.ratelimit import TokenBucket
from meshcomm.sip.build import build_response
from meshcomm.sip.message import SipRequest, SipResponse

#: The answer's reason phrase, by the trust store's reason (RFC 3261 §21.4.4: 403 with a
#: phrase saying why; clients show it).
REVOKED_PHRASES: Final = {"revoked": "Device Revoked",
                          "credential_revoked": "Credential Revoked",
                          "untrusted_agency": "Agency Revoked"}
DEFAULT_PHRASE: Final = "Device Revoked"
#: The journal budget of refusals (a client retrying in a loop cannot fill the journal).
JOURNAL_RATE_PER_S: Final = 1.0
JOURNAL_BURST: Final = 10
#: A refused request's transaction answers its retransmissions this long.
REFUSAL_LINGER_S: Final = 8.0


class RevokedCounter(StrEnum):
    REFUSED = "revoked_refused"
    JOURNAL_SUPPRESSED = "revoked_journal_suppressed"


class RevokedGate:
    """Mixin: needs the gateway's node, counters, journal and sending."""

    node: MeshNode
    counters: Counter[str]
    admission: Admission
    _events: deque[JournalRecord | SendResult | InboxEntry | AwaitingEnvelope]
    _revoked_journal: TokenBucket | None = None

    # The gateway's own operations (SipGateway defines them).
    def _journal(self, direction: Direction, message: SipRequest | SipResponse, peer: Peer,
                 hops: int = 0, note: str = "", env: bytes = b"") -> EnvelopeSlot | None:
        raise NotImplementedError

    def _send(self, dest: Peer, data: bytes, slot: EnvelopeSlot | None = None) -> None:
        raise NotImplementedError

    def _to_tag(self, request: SipRequest) -> str | None:
        raise NotImplementedError

    def _refused_revoked(self, tx: ProxyTx, now: float) -> bool:
        """Answer a local client's REGISTER or out-of-dialog request 403 when this node is
        revoked; True when answered here."""
        src = tx.upstream
        trust = self.node.overlay.trust
        if not isinstance(src, tuple) or not trust.active:
            return False
        if tx.method != "REGISTER" and tx.request.to_addr.tag is not None:
            return False
        reason = trust.own_refusal()
        if not reason:
            return False
        self.counters[RevokedCounter.REFUSED] += 1
        response = build_response(tx.request, 403, REVOKED_PHRASES.get(reason, DEFAULT_PHRASE),
                                  to_tag=self._to_tag(tx.request))
        if self._revoked_may_journal(now):
            self._events.append(drop_record(reason, src, len(tx.request.body), tx.hops))
            self._journal(Direction.ORIGINATED, response, src, tx.hops, note=reason)
        tx.step(TxIn.SEND_FINAL)
        tx.final_status = response.status
        self.admission.closed(tx.tx_id)
        tx.retransmit_at = None
        tx.deadline = now + REFUSAL_LINGER_S
        tx.last_response = response          # a retransmitted request gets it again
        self._send(src, response.serialize())
        return True

    def _revoked_may_journal(self, now: float) -> bool:
        if self._revoked_journal is None:
            self._revoked_journal = TokenBucket(JOURNAL_RATE_PER_S, JOURNAL_BURST, now)
        if self._revoked_journal.take(now):
            return True
        self.counters[RevokedCounter.JOURNAL_SUPPRESSED] += 1
        return False
