"""Checks of an island relay's ``RESOLVED`` answer (issue 12), for :mod:`meshcomm.node.tunnel`.

A node without an uplink learns where a remote AoR lives from an uplinked relay of its
island. The relay is not trusted to tell the truth: each entry of its answer carries the
owner-signed binding the relay read from the DHT (the bytes unchanged,
:mod:`meshcomm.node.tunnel_wire`), and the asking node checks it as gossip checks a
binding before it learns a route or a key from it (:func:`entry_refusal`):

* the binding is the named node's (its key's id), of the AoR asked for, of our incident,
  a live registration (not a de-registration), not dated in the future, not past its
  signed end (with the clock tolerance of every binding), not older than a sequence this
  node already accepted for the same AoR and key (the location table's freshness memory);
* the trust records refuse neither its key nor (:class:`~meshcomm.overlay.trustsync.
  TrustSync`) its credential or, under ``agency``, its agency;
* the owner's signature holds, and the trust policy accepts it (``agency``: a valid
  credential for the AoR and role, :func:`meshcomm.dht.records.trust_reject`).

The one entry without a binding is the answering relay naming itself (its gateway takes
the request to an upstream proxy): accepted only from that relay, with the key that signed
its answer. A refused entry is dropped, counted (``tunnel_drop_bad_answer``) and journaled
(``envelope.dropped``, kind ``resolved``; rate-limited per reason and relay, and overall).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from meshcomm.dht.records import normalise_aor, trust_reject
from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import EnvelopeDropped
from meshcomm.location.binding import CLOCK_SKEW_TOLERANCE_S, Binding
from meshcomm.location.table import LocationTable
from meshcomm.node.tunnel_wire import AnswerEntry
from meshcomm.overlay.ratelimit import JournalGate, TokenBucket
from meshcomm.overlay.trustsync import TrustSync
from meshcomm.security.identity import node_id_of
from meshcomm.security.verify import SignatureVerifier
from meshcomm.types import PUBLIC_KEY_LEN
from meshcomm.wire import limits

#: The journal records one dropped entry per (reason, relay) at most this often, and at
#: most DROP_JOURNAL_PER_S (burst DROP_JOURNAL_BURST) overall; the rest are only counted.
DROP_JOURNAL_INTERVAL_S: Final = 1.0
DROP_JOURNAL_PER_S: Final = 5.0
DROP_JOURNAL_BURST: Final = 50
MAX_DROP_JOURNAL_KEYS: Final = 1024
#: The journal's kind of a dropped answer entry.
DROP_KIND: Final = "resolved"


class AnswerReject(StrEnum):
    """Why an entry of a RESOLVED answer was dropped."""

    NO_BINDING = "no_binding"            # names a node other than the relay, unsigned
    WRONG_NODE = "wrong_node"            # the binding is another key's
    WRONG_AOR = "wrong_aor"
    WRONG_INCIDENT = "wrong_incident"
    DEREGISTERED = "deregistered"        # a tombstone: no route
    FUTURE_DATED = "future_dated"
    EXPIRED = "expired"
    STALE = "stale"                      # a lower sequence than one accepted here
    REVOKED = "revoked"                  # key, credential or (agency) agency
    BAD_SIGNATURE = "bad_signature"
    UNTRUSTED = "untrusted"              # the trust policy refuses it (credential)


@dataclass(frozen=True, slots=True)
class AnswerChecks:
    """What entries are checked against: the node's incident, location table (trust
    policy, freshness memory), signature verifier and trust records."""

    incident: str
    table: LocationTable
    verifier: SignatureVerifier
    trust: TrustSync


def _dates_refusal(binding: Binding, checks: AnswerChecks, wall_now: float) -> AnswerReject | None:
    if binding.is_tombstone:
        return AnswerReject.DEREGISTERED
    if binding.issued_at > wall_now + limits.MAX_FUTURE_SKEW_S:
        return AnswerReject.FUTURE_DATED
    if binding.signed_end + CLOCK_SKEW_TOLERANCE_S <= wall_now:
        return AnswerReject.EXPIRED
    floor = checks.table.freshness.floor(binding.record_id, wall_now)
    held = checks.table.get(binding.record_id)
    if ((floor is not None and binding.seq < floor.seq)
            or (held is not None and binding.seq < held.binding.seq)):
        return AnswerReject.STALE
    return None


def entry_refusal(entry: AnswerEntry, aor: str, relay_key: bytes, checks: AnswerChecks,
                  wall_now: float) -> AnswerReject | None:
    """Why ``entry`` of an answer to ``aor`` from the relay of ``relay_key`` is not
    believed (None: it may be learned). Cheap checks first, signatures last."""
    binding = entry.binding
    if binding is None:
        if (len(relay_key) == PUBLIC_KEY_LEN and node_id_of(relay_key) == entry.node
                and not entry.relays):
            return None                  # the relay itself (its upstream proxy)
        return AnswerReject.NO_BINDING
    if binding.node_id != entry.node:
        return AnswerReject.WRONG_NODE
    if normalise_aor(binding.aor) != normalise_aor(aor):
        return AnswerReject.WRONG_AOR
    if binding.envelope.incident != checks.incident:
        return AnswerReject.WRONG_INCIDENT
    refusal = _dates_refusal(binding, checks, wall_now)
    if refusal is not None:
        return refusal
    if checks.trust.active and checks.trust.binding_refusal(binding):
        return AnswerReject.REVOKED
    if not binding.envelope.verify(checks.verifier):
        return AnswerReject.BAD_SIGNATURE
    if trust_reject(binding, checks.table.policy, wall_now) is not None:
        return AnswerReject.UNTRUSTED
    return None


class AnswerDrops:
    """Journal records of dropped entries, rate-limited per (reason, relay) and overall
    (a relay answering garbage cannot grow the journal)."""

    def __init__(self, now: float = 0.0) -> None:
        self._gate = JournalGate(DROP_JOURNAL_INTERVAL_S, MAX_DROP_JOURNAL_KEYS,
                                 TokenBucket(DROP_JOURNAL_PER_S, DROP_JOURNAL_BURST, now))
        #: Drops only counted (not journaled) since the start.
        self.suppressed = 0

    def record(self, reason: AnswerReject, relay: bytes, now: float) -> JournalRecord | None:
        """The journal record of one drop, or None when the limits leave it out."""
        if not self._gate.allow((reason.value, relay), now):
            self.suppressed += 1
            return None
        return JournalRecord.of(EnvelopeDropped(reason=reason.value, src=relay.hex(),
                                                kind=DROP_KIND))
