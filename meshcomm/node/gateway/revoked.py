"""A revoked node's gateway stops serving its local clients (issue 12 point 4), a part of
:class:`meshcomm.node.gateway.core.SipGateway` (one hook: its answer goes out through the
transaction like any final answer the gateway gives).

Once the trust records this node holds revoke its own device key, the credential it runs
with, or (``agency`` policy) that credential's agency, every other node drops its
bindings and its traffic. Its gateway then says so instead of answering 200 to a
REGISTER that takes nothing anywhere: a REGISTER or an out-of-dialog request from a local
client (the built-in UA's ``ctl send`` too) is answered ``403 Device Revoked`` (or
``Credential Revoked``, ``Agency Revoked``) through its transaction (a retransmission gets
the same answer), counted (``revoked_refused``) and journaled: the request and the 403 like
every message the gateway handles, and a ``sip.message`` drop record with the reason, at
most :data:`JOURNAL_BURST` at once and :data:`JOURNAL_RATE_PER_S` after (the rest counted,
``revoked_journal_suppressed``).

Requests within a dialog pass (a BYE still ends a call), and so do requests from the
mesh (other nodes no longer send any). The check costs one length test while the node
holds no trust record, a cached verdict after (:meth:`TrustSync.own_refusal`); ``ctl
status`` shows the same verdict as ``trust.this_node_revoked``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from typing import Final

from meshcomm.journal.events import JournalRecord
from meshcomm.node.gateway.parts import ProxyTx, drop_record
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
#: The journal budget of drop records (a client retrying in a loop cannot double the
#: journal's growth; the gateway's shedding bounds the requests themselves).
JOURNAL_RATE_PER_S: Final = 1.0
JOURNAL_BURST: Final = 10


class RevokedCounter(StrEnum):
    REFUSED = "revoked_refused"
    JOURNAL_SUPPRESSED = "revoked_journal_suppressed"


class RevokedGate:
    """Whether this node still serves its clients (see the module docstring)."""

    def __init__(self, node: MeshNode, counters: Counter[str],
                 journal: Callable[[JournalRecord], None],
                 to_tag: Callable[[SipRequest], str | None], now: float) -> None:
        self.node = node
        self.counters = counters
        self.journal = journal
        self.to_tag = to_tag
        self._budget = TokenBucket(JOURNAL_RATE_PER_S, JOURNAL_BURST, now)

    def refusal(self, tx: ProxyTx, now: float) -> SipResponse | None:
        """The 403 for a local client's REGISTER or out-of-dialog request while this node
        is revoked (counted, journaled within the budget), else None."""
        src = tx.upstream
        trust = self.node.overlay.trust
        if not isinstance(src, tuple) or not trust.active:
            return None
        if tx.method != "REGISTER" and tx.request.to_addr.tag is not None:
            return None
        reason = trust.own_refusal()
        if not reason:
            return None
        self.counters[RevokedCounter.REFUSED] += 1
        if self._budget.take(now):
            self.journal(drop_record(reason, src, len(tx.request.body), tx.hops))
        else:
            self.counters[RevokedCounter.JOURNAL_SUPPRESSED] += 1
        return build_response(tx.request, 403, REVOKED_PHRASES.get(reason, DEFAULT_PHRASE),
                              to_tag=self.to_tag(tx.request))
