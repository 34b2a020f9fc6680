"""Store-and-forward's counters, drop reasons and custody refusals, each an Enum.

Every counter of :class:`~meshcomm.node.storeforward.StoreForward` is a member of
:class:`SfCounter`, whose value is the name the status output and the tests read. The
per-reason counters are reached from the reason through explicit tables
(:data:`SF_DROP_COUNTERS`, :data:`CUSTODY_REFUSAL_COUNTERS`), never by formatting a name;
a test checks every reason has its counter. Decoders report their reason as text
(``DecodeError.reason``): :meth:`SfDropReason.of` turns it into a member.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from meshcomm.errors import OTHER_REASON, ReasonEnum


class SfDropReason(ReasonEnum):
    """Why a store-and-forward message was refused (the journaled ``reason``)."""

    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    TRAILING = "trailing"
    OVERSIZED = "oversized"
    BAD_AOR = "bad_aor"
    BAD_VERSION = "bad_version"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_INCIDENT = "wrong_incident"
    FORGED_PARCEL = "forged_parcel"
    FORGED_OFFER = "forged_offer"
    FORGED_RECEIPT = "forged_receipt"
    #: a decoder's reason text no member names
    OTHER = OTHER_REASON


class CustodyRefusal(StrEnum):
    """Why a relay refused custody of an offered message."""

    FUTURE_DATED = "future_dated"
    EXPIRED = "expired"
    DELIVERED = "delivered"
    FULL = "full"
    CLEAR = "clear"             # a MESSAGE in clear: relays of a sealing node hold none


class SfCounter(StrEnum):
    """Every store-and-forward counter (the value is the reported name)."""

    ACCEPT_UNSOLICITED = "sf_accept_unsolicited"
    CUSTODY_ACCEPTED = "sf_custody_accepted"
    CUSTODY_CLEAR_DROPPED = "sf_custody_clear_dropped"   # restored custody in clear
    CUSTODY_TAKEN = "sf_custody_taken"
    DELIVER_NOT_BOUND_HERE = "sf_deliver_not_bound_here"
    DELIVERED_DIRECT = "sf_delivered_direct"
    DELIVERED_EVICTED = "sf_delivered_evicted"
    DELIVERED_LOCAL = "sf_delivered_local"
    DELIVERY_ATTEMPTS = "sf_delivery_attempts"
    DROP_BAD_AOR = "sf_drop_bad_aor"
    DROP_BAD_VERSION = "sf_drop_bad_version"
    DROP_FORGED_OFFER = "sf_drop_forged_offer"
    DROP_FORGED_PARCEL = "sf_drop_forged_parcel"
    DROP_FORGED_RECEIPT = "sf_drop_forged_receipt"
    DROP_JOURNAL_SUPPRESSED = "sf_drop_journal_suppressed"
    DROP_MALFORMED = "sf_drop_malformed"
    DROP_OTHER = "sf_drop_other"
    DROP_OVERSIZED = "sf_drop_oversized"
    DROP_TRAILING = "sf_drop_trailing"
    DROP_TRUNCATED = "sf_drop_truncated"
    DROP_UNKNOWN_TYPE = "sf_drop_unknown_type"
    DROP_WRONG_INCIDENT = "sf_drop_wrong_incident"
    DUPLICATE_SUPPRESSED = "sf_duplicate_suppressed"
    EXPIRED = "sf_expired"
    FAR_DELIVERIES = "sf_far_deliveries"        # DELIVERs through the tunnel
    HEAL_RETRIES = "sf_heal_retries"
    HELD_OWN = "sf_held_own"
    HOLD_NOT_DURABLE = "sf_hold_not_durable"
    LOCAL_DELIVERY_FAILED = "sf_local_delivery_failed"
    LOCAL_DELIVERY_TIMEOUT = "sf_local_delivery_timeout"
    LOCAL_DONE_UNKNOWN = "sf_local_done_unknown"
    OFFER_NOT_RELAY = "sf_offer_not_relay"
    OFFER_REFUSED_DELIVERED = "sf_offer_refused_delivered"
    OFFER_REFUSED_EXPIRED = "sf_offer_refused_expired"
    OFFER_REFUSED_CLEAR = "sf_offer_refused_clear"
    OFFER_REFUSED_FULL = "sf_offer_refused_full"
    OFFER_REFUSED_FUTURE_DATED = "sf_offer_refused_future_dated"
    OFFERS_SENT = "sf_offers_sent"
    PENDING_LOCAL_FULL = "sf_pending_local_full"
    PERSIST_FAILED = "sf_persist_failed"
    PROBE_REACHABLE_AGAIN = "sf_probe_reachable_again"
    PROBES_ANSWERED = "sf_probes_answered"
    PROBES_SENT = "sf_probes_sent"
    PROBES_URGENT = "sf_probes_urgent"
    REMOTE_DEFERRED = "sf_remote_deferred"
    REMOTE_DELIVERED = "sf_remote_delivered"
    REMOTE_FAILED = "sf_remote_failed"
    REMOTE_TRIES = "sf_remote_tries"
    REMOTE_WAKEUPS = "sf_remote_wakeups"
    RECEIPT_UNKNOWN = "sf_receipt_unknown"
    RECEIPTS_ACCEPTED = "sf_receipts_accepted"
    REFUSED_FULL = "sf_refused_full"
    RESTORE_WRONG_INCIDENT = "sf_restore_wrong_incident"
    RESEALED = "sf_resealed"                    # own clear parcels sealed once a key was known
    RESOLVES = "sf_resolves"                    # questions to the tunnel about To AoRs
    RESOLVES_FAILED = "sf_resolves_failed"      # ... answered with no usable node
    RESTORED = "sf_restored"
    RX = "sf_rx"
    STATUS_IGNORED = "sf_status_ignored"
    TX = "sf_tx"


#: The counter of each drop reason (a test checks every reason has one).
SF_DROP_COUNTERS: Final[Mapping[SfDropReason, SfCounter]] = {
    SfDropReason.MALFORMED: SfCounter.DROP_MALFORMED,
    SfDropReason.TRUNCATED: SfCounter.DROP_TRUNCATED,
    SfDropReason.TRAILING: SfCounter.DROP_TRAILING,
    SfDropReason.OVERSIZED: SfCounter.DROP_OVERSIZED,
    SfDropReason.BAD_AOR: SfCounter.DROP_BAD_AOR,
    SfDropReason.BAD_VERSION: SfCounter.DROP_BAD_VERSION,
    SfDropReason.UNKNOWN_TYPE: SfCounter.DROP_UNKNOWN_TYPE,
    SfDropReason.WRONG_INCIDENT: SfCounter.DROP_WRONG_INCIDENT,
    SfDropReason.FORGED_PARCEL: SfCounter.DROP_FORGED_PARCEL,
    SfDropReason.FORGED_OFFER: SfCounter.DROP_FORGED_OFFER,
    SfDropReason.FORGED_RECEIPT: SfCounter.DROP_FORGED_RECEIPT,
    SfDropReason.OTHER: SfCounter.DROP_OTHER,
}

#: The counter of each custody refusal (a test checks every refusal has one).
CUSTODY_REFUSAL_COUNTERS: Final[Mapping[CustodyRefusal, SfCounter]] = {
    CustodyRefusal.FUTURE_DATED: SfCounter.OFFER_REFUSED_FUTURE_DATED,
    CustodyRefusal.EXPIRED: SfCounter.OFFER_REFUSED_EXPIRED,
    CustodyRefusal.DELIVERED: SfCounter.OFFER_REFUSED_DELIVERED,
    CustodyRefusal.FULL: SfCounter.OFFER_REFUSED_FULL,
    CustodyRefusal.CLEAR: SfCounter.OFFER_REFUSED_CLEAR,
}
