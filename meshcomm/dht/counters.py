"""The DHT bridge's counters (named by Enum members: ``tools/check_counters.py``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from meshcomm.dht.records import RecordReject


class DhtCounter(StrEnum):
    PUTS = "dht_puts"
    PUTS_FAILED = "dht_puts_failed"
    PUT_SKIPPED_SHORT = "dht_put_skipped_short"   # the binding ends too soon to publish
    GETS = "dht_gets"
    GETS_FAILED = "dht_gets_failed"
    LISTENS = "dht_listens"
    CANCELS = "dht_cancels"
    RESOLVED = "dht_resolved"
    RESOLVED_FROM_CACHE = "dht_resolved_from_cache"
    NOT_FOUND = "dht_not_found"
    MISS_RETRIES = "dht_miss_retries"
    LOOKUPS_BUSY = "dht_lookups_busy"           # too many lookups at once: answered NotFound
    WATCHES_REFUSED = "dht_watches_refused"
    CACHE_EVICTED = "dht_cache_evicted"
    VALUES = "dht_values"                       # values handed to the bridge
    VALUES_OVER_RESULT = "dht_values_over_result"  # beyond MAX_VALUES_PER_RESULT in one result
    VALUES_OVER_BUDGET = "dht_values_over_budget"  # beyond a lookup's, key's or global budget
    VERIFY_OVER_BUDGET = "dht_verify_over_budget"  # signature checks refused by a budget
    DUPLICATES = "dht_duplicates"               # a value or attachment already merged
    ACCEPTED = "dht_accepted"                   # records merged into the remote view
    STRAY_RESULTS = "dht_stray_results"         # a result for no operation we have
    UPLINK_CHANGES = "dht_uplink_changes"
    UPLINK_JOURNAL_SUPPRESSED = "dht_uplink_journal_suppressed"
    DROP_JOURNAL_SUPPRESSED = "dht_drop_journal_suppressed"
    DROP_UNDECODABLE = "dht_drop_undecodable"
    DROP_WRONG_AOR = "dht_drop_wrong_aor"
    DROP_WRONG_INCIDENT = "dht_drop_wrong_incident"
    DROP_BAD_SIGNATURE = "dht_drop_bad_signature"
    DROP_NO_CREDENTIAL = "dht_drop_no_credential"
    DROP_BAD_CREDENTIAL = "dht_drop_bad_credential"
    DROP_FUTURE_DATED = "dht_drop_future_dated"
    DROP_EXPIRED = "dht_drop_expired"
    DROP_STALE = "dht_drop_stale"
    DROP_ATTACH_WRONG_INCIDENT = "dht_drop_attach_wrong_incident"
    DROP_ATTACH_WRONG_BINDING = "dht_drop_attach_wrong_binding"
    DROP_ATTACH_BAD_SIGNATURE = "dht_drop_attach_bad_signature"
    DROP_ATTACH_EXPIRED = "dht_drop_attach_expired"
    DROP_ATTACH_FUTURE_DATED = "dht_drop_attach_future_dated"
    DROP_CLAIMS_FULL = "dht_drop_claims_full"
    DROP_RELAYS_FULL = "dht_drop_relays_full"
    DROP_REVOKED = "dht_drop_revoked"
    DROP_CREDENTIAL_REVOKED = "dht_drop_credential_revoked"
    DROP_RELAY_REVOKED = "dht_drop_relay_revoked"
    REVOKED_FORGOTTEN = "dht_revoked_forgotten"  # claims or relays left the view: revoked
    DROP_OTHER = "dht_drop_other"


R, C = RecordReject, DhtCounter
#: Every drop reason's counter (a test checks that none is missing).
DROP_COUNTERS: Final[dict[RecordReject, DhtCounter]] = {
    R.UNDECODABLE: C.DROP_UNDECODABLE,
    R.WRONG_AOR: C.DROP_WRONG_AOR,
    R.WRONG_INCIDENT: C.DROP_WRONG_INCIDENT,
    R.BAD_SIGNATURE: C.DROP_BAD_SIGNATURE,
    R.NO_CREDENTIAL: C.DROP_NO_CREDENTIAL,
    R.BAD_CREDENTIAL: C.DROP_BAD_CREDENTIAL,
    R.FUTURE_DATED: C.DROP_FUTURE_DATED,
    R.EXPIRED: C.DROP_EXPIRED,
    R.STALE: C.DROP_STALE,
    R.ATTACH_WRONG_INCIDENT: C.DROP_ATTACH_WRONG_INCIDENT,
    R.ATTACH_WRONG_BINDING: C.DROP_ATTACH_WRONG_BINDING,
    R.ATTACH_BAD_SIGNATURE: C.DROP_ATTACH_BAD_SIGNATURE,
    R.ATTACH_EXPIRED: C.DROP_ATTACH_EXPIRED,
    R.ATTACH_FUTURE_DATED: C.DROP_ATTACH_FUTURE_DATED,
    R.CLAIMS_FULL: C.DROP_CLAIMS_FULL,
    R.RELAYS_FULL: C.DROP_RELAYS_FULL,
    R.REVOKED: C.DROP_REVOKED,
    R.CREDENTIAL_REVOKED: C.DROP_CREDENTIAL_REVOKED,
    R.RELAY_REVOKED: C.DROP_RELAY_REVOKED,
    R.OTHER: C.DROP_OTHER,
}
