"""The overlay's counters, its drop reasons and its frame tags, each an Enum.

Every counter the overlay (and :class:`~meshcomm.node.mesh.MeshNode` on top of it) keeps
is a member of :class:`OverlayCounter`. Its value is the name the status output, the
control API's JSON, the simulator's metrics and the tests read (``counters["drop_bad_signature"]``
still works: a StrEnum member hashes and compares equal to its value). Counters that
exist per reason or per frame kind are reached from that reason or kind through an
explicit table (:data:`DROP_COUNTERS`, :data:`TX_COUNTERS`), never by formatting a name.

A :class:`DropReason` value is also what the ``envelope.dropped`` journal entry stores.
The layers below the overlay (wire codecs, credentials, the location table) report why
they refused an input as text (``DecodeError.reason``, ``TrustError.reason``,
``MergeResult.reason``); :meth:`DropReason.of` turns that text into a member (a test
checks that every reason those layers can give is one).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from meshcomm.errors import OTHER_REASON, ReasonEnum


class DropReason(ReasonEnum):
    """Why the overlay refused an input (the journaled ``reason``)."""

    # the frame as a whole
    OVERSIZED = "oversized"
    RATE_LIMITED = "rate_limited"
    WRONG_INCIDENT = "wrong_incident"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED = "replayed"
    NEIGHBOURS_FULL = "neighbours_full"
    TTL_EXPIRED = "ttl_expired"
    BAD_FRAGMENT = "bad_fragment"
    #: a per-hop ack whose link MAC does not check out, or from a link with no key
    FORGED_ACK = "forged_ack"
    #: a frame naming its origin by a short id whose key this node does not hold, or
    #: holds two of (unacknowledged: the retransmission carries the key)
    UNKNOWN_ORIGIN = "unknown_origin"
    AMBIGUOUS_ORIGIN = "ambiguous_origin"
    #: a UNICAST whose destination prefix matches two known nodes (never forwarded)
    AMBIGUOUS_DST = "ambiguous_dst"
    #: A SHORT-header sealed message of an end-to-end session this node does not hold
    #: (meshcomm.security.e2e; the node layer counts and signals it, see e2e_sip).
    UNKNOWN_SESSION = "unknown_session"
    # decoding (wire codecs, envelope, binding)
    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    TRAILING = "trailing"
    UNKNOWN_TYPE = "unknown_type"
    VERSION = "version"
    BAD_AOR = "bad_aor"
    # admission and trust
    NO_CREDENTIAL = "no_credential"
    ADMISSION_LIMITED = "admission_limited"
    UNTRUSTED = "untrusted"
    UNTRUSTED_AGENCY = "untrusted_agency"
    BAD_CREDENTIAL = "bad_credential"
    CREDENTIAL_SCOPE = "credential_scope"
    ROLE_SCOPE = "role_scope"
    BAD_HANDOVER = "bad_handover"
    HANDOVER_SIGNER = "handover_signer"
    CREDENTIAL_EXPIRED = "credential_expired"
    # revocation and trust records (meshcomm.security.revocation)
    REVOKED = "revoked"
    CREDENTIAL_REVOKED = "credential_revoked"
    TRUST_UNAUTHORISED = "trust_unauthorised"
    TRUST_QUOTA = "trust_quota"
    TRUST_NOT_DURABLE = "trust_not_durable"
    # the location table's merge
    REPLAYED_OLD_SEQ = "replayed_old_seq"
    FUTURE_DATED = "future_dated"
    EXPIRED = "expired"
    AOR_CLAIMS_FULL = "aor_claims_full"
    TABLE_FULL = "table_full"
    # media frames
    MEDIA_RATE_LIMITED = "media_rate_limited"
    MEDIA_TTL_EXPIRED = "media_ttl_expired"
    MEDIA_MALFORMED = "media_malformed"
    MEDIA_TRUNCATED = "media_truncated"
    MEDIA_TRAILING = "media_trailing"
    MEDIA_OVERSIZED = "media_oversized"
    MEDIA_UNKNOWN_TYPE = "media_unknown_type"
    #: a reason text no member names (a lower layer grew a reason the overlay lacks)
    OTHER = OTHER_REASON


#: A media frame that failed to decode, by the decoder's reason.
MEDIA_DECODE_DROPS: Final[Mapping[DropReason, DropReason]] = {
    DropReason.MALFORMED: DropReason.MEDIA_MALFORMED,
    DropReason.TRUNCATED: DropReason.MEDIA_TRUNCATED,
    DropReason.TRAILING: DropReason.MEDIA_TRAILING,
    DropReason.OVERSIZED: DropReason.MEDIA_OVERSIZED,
    DropReason.UNKNOWN_TYPE: DropReason.MEDIA_UNKNOWN_TYPE,
}


class TxTag(StrEnum):
    """What kind of frame the overlay sent (one ``tx_*`` counter each)."""

    HELLO = "hello"
    BINDING = "binding"
    BINDING_RESEND = "binding_resend"
    TOMBSTONE_ECHO = "tombstone_echo"
    TOMBSTONE_RESEND = "tombstone_resend"
    UNICAST = "unicast"
    ACK = "ack"
    MEDIA = "media"
    DIGEST = "digest"
    SUMMARY = "summary"
    PULL = "pull"
    RECORDS = "records"
    TRUST = "trust"
    TRUST_IDS = "trust_ids"
    TRUST_PULL = "trust_pull"


class OverlayCounter(StrEnum):
    """Every counter of the overlay and the mesh node (the value is the reported name)."""

    # sent
    TX_FRAMES = "tx_frames"
    TX_BYTES = "tx_bytes"
    TX_HELLO = "tx_hello"
    TX_HELLO_CHECKPOINT = "tx_hello_checkpoint"   # HELLOs that carried our checkpoint
    TX_BINDING = "tx_binding"
    TX_BINDING_RESEND = "tx_binding_resend"
    TX_TOMBSTONE_ECHO = "tx_tombstone_echo"
    TX_TOMBSTONE_RESEND = "tx_tombstone_resend"
    TX_UNICAST = "tx_unicast"
    TX_ACK = "tx_ack"
    TX_MEDIA = "tx_media"
    TX_DIGEST = "tx_digest"
    TX_SUMMARY = "tx_summary"
    TX_PULL = "tx_pull"
    TX_RECORDS = "tx_records"
    TX_TRUST = "tx_trust"
    TX_TRUST_IDS = "tx_trust_ids"
    TX_TRUST_PULL = "tx_trust_pull"
    # received
    RX_FRAMES = "rx_frames"
    RX_BYTES = "rx_bytes"
    RX_OWN = "rx_own"
    RX_DUPLICATES = "rx_duplicates"
    #: first copies of unicasts sent naming their origin by short id (issue 13)
    UNICAST_KEY_ELIDED = "unicast_key_elided"
    FLOOD_SUPPRESSED = "flood_suppressed"
    # dropped
    DROP_JOURNAL_SUPPRESSED = "drop_journal_suppressed"
    DROP_OVERSIZED = "drop_oversized"
    DROP_RATE_LIMITED = "drop_rate_limited"
    DROP_WRONG_INCIDENT = "drop_wrong_incident"
    DROP_BAD_SIGNATURE = "drop_bad_signature"
    DROP_REPLAYED = "drop_replayed"
    DROP_NEIGHBOURS_FULL = "drop_neighbours_full"
    DROP_TTL_EXPIRED = "drop_ttl_expired"
    DROP_BAD_FRAGMENT = "drop_bad_fragment"
    DROP_FORGED_ACK = "drop_forged_ack"
    DROP_UNKNOWN_ORIGIN = "drop_unknown_origin"
    DROP_AMBIGUOUS_ORIGIN = "drop_ambiguous_origin"
    DROP_AMBIGUOUS_DST = "drop_ambiguous_dst"
    DROP_UNKNOWN_SESSION = "drop_unknown_session"
    DROP_MALFORMED = "drop_malformed"
    DROP_TRUNCATED = "drop_truncated"
    DROP_TRAILING = "drop_trailing"
    DROP_UNKNOWN_TYPE = "drop_unknown_type"
    DROP_VERSION = "drop_version"
    DROP_BAD_AOR = "drop_bad_aor"
    DROP_NO_CREDENTIAL = "drop_no_credential"
    DROP_ADMISSION_LIMITED = "drop_admission_limited"
    DROP_UNTRUSTED = "drop_untrusted"
    DROP_UNTRUSTED_AGENCY = "drop_untrusted_agency"
    DROP_BAD_CREDENTIAL = "drop_bad_credential"
    DROP_CREDENTIAL_SCOPE = "drop_credential_scope"
    DROP_ROLE_SCOPE = "drop_role_scope"
    DROP_BAD_HANDOVER = "drop_bad_handover"
    DROP_HANDOVER_SIGNER = "drop_handover_signer"
    DROP_CREDENTIAL_EXPIRED = "drop_credential_expired"
    DROP_REVOKED = "drop_revoked"
    DROP_CREDENTIAL_REVOKED = "drop_credential_revoked"
    DROP_TRUST_UNAUTHORISED = "drop_trust_unauthorised"
    DROP_TRUST_QUOTA = "drop_trust_quota"
    DROP_TRUST_NOT_DURABLE = "drop_trust_not_durable"
    DROP_REPLAYED_OLD_SEQ = "drop_replayed_old_seq"
    DROP_FUTURE_DATED = "drop_future_dated"
    DROP_EXPIRED = "drop_expired"
    DROP_AOR_CLAIMS_FULL = "drop_aor_claims_full"
    DROP_TABLE_FULL = "drop_table_full"
    DROP_MEDIA_RATE_LIMITED = "drop_media_rate_limited"
    DROP_MEDIA_TTL_EXPIRED = "drop_media_ttl_expired"
    DROP_MEDIA_MALFORMED = "drop_media_malformed"
    DROP_MEDIA_TRUNCATED = "drop_media_truncated"
    DROP_MEDIA_TRAILING = "drop_media_trailing"
    DROP_MEDIA_OVERSIZED = "drop_media_oversized"
    DROP_MEDIA_UNKNOWN_TYPE = "drop_media_unknown_type"
    DROP_OTHER = "drop_other"
    # unicast forwarding
    UNICAST_ACKED = "unicast_acked"
    #: per-hop ack ids sent riding on a frame to that neighbour / in standalone ack frames
    ACK_IDS_PIGGYBACKED = "ack_ids_piggybacked"
    ACK_IDS_STANDALONE = "ack_ids_standalone"
    #: acks sent as signed envelopes (the link has no key: the sender's HELLO not heard)
    ACKS_SIGNED = "acks_signed"
    #: unicasts sent untracked: their ack id was already pending for another envelope
    UNICAST_ACK_ID_CLASH = "unicast_ack_id_clash"
    #: unicasts whose first copy carried acks (no ack of their own, see overlay.acks),
    #: and copies re-sent because a frame they acknowledged came again
    UNICAST_CARRIERS = "unicast_carriers"
    UNICAST_CARRIERS_RESENT = "unicast_carriers_resent"
    UNICAST_RETRANSMITS = "unicast_retransmits"
    UNICAST_NEXT_HOP_FAILED = "unicast_next_hop_failed"
    UNICAST_SCOPED_FLOOD = "unicast_scoped_flood"
    UNICAST_REASSEMBLY_TIMEOUT = "unicast_reassembly_timeout"
    UNICAST_REASSEMBLY_EVICTED = "unicast_reassembly_evicted"
    # media forwarding
    MEDIA_DELIVERED = "media_delivered"
    MEDIA_RELAYED = "media_relayed"
    MEDIA_DUPLICATES = "media_duplicates"
    MEDIA_RETRANSMITS = "media_retransmits"
    MEDIA_HOP_FAILED = "media_hop_failed"
    MEDIA_TOO_LATE = "media_too_late"
    MEDIA_NO_ROUTE = "media_no_route"
    # anti-entropy
    AE_LEARNED = "ae_learned"
    AE_HOLDER_ASKS = "ae_holder_asks"
    AE_PUSH_DEFERRED = "ae_push_deferred"
    AE_PULL_DEFERRED = "ae_pull_deferred"
    AE_RECORDS_SKIPPED_RECENT = "ae_records_skipped_recent"
    # checkpoint witnesses (meshcomm.overlay.witness)
    WITNESS_JOURNALED = "witness_journaled"
    WITNESS_UNCHANGED = "witness_unchanged"
    WITNESS_TOO_SOON = "witness_too_soon"
    WITNESS_NOT_ADMITTED = "witness_not_admitted"
    WITNESS_BAD_SIGNATURE = "witness_bad_signature"
    WITNESS_EVICTED = "witness_evicted"
    # departures (tombstones)
    TOMBSTONE_RELAY_UNTRACKED = "tombstone_relay_untracked"
    DEPARTURE_ACKED = "departure_acked"
    DEPARTURE_UNACKED = "departure_unacked"


C = OverlayCounter
D = DropReason

#: The counter of each drop reason (a test checks every reason has one).
DROP_COUNTERS: Final[Mapping[DropReason, OverlayCounter]] = {
    D.OVERSIZED: C.DROP_OVERSIZED,
    D.RATE_LIMITED: C.DROP_RATE_LIMITED,
    D.WRONG_INCIDENT: C.DROP_WRONG_INCIDENT,
    D.BAD_SIGNATURE: C.DROP_BAD_SIGNATURE,
    D.REPLAYED: C.DROP_REPLAYED,
    D.NEIGHBOURS_FULL: C.DROP_NEIGHBOURS_FULL,
    D.TTL_EXPIRED: C.DROP_TTL_EXPIRED,
    D.BAD_FRAGMENT: C.DROP_BAD_FRAGMENT,
    D.FORGED_ACK: C.DROP_FORGED_ACK,
    D.UNKNOWN_ORIGIN: C.DROP_UNKNOWN_ORIGIN,
    D.AMBIGUOUS_ORIGIN: C.DROP_AMBIGUOUS_ORIGIN,
    D.AMBIGUOUS_DST: C.DROP_AMBIGUOUS_DST,
    D.UNKNOWN_SESSION: C.DROP_UNKNOWN_SESSION,
    D.MALFORMED: C.DROP_MALFORMED,
    D.TRUNCATED: C.DROP_TRUNCATED,
    D.TRAILING: C.DROP_TRAILING,
    D.UNKNOWN_TYPE: C.DROP_UNKNOWN_TYPE,
    D.VERSION: C.DROP_VERSION,
    D.BAD_AOR: C.DROP_BAD_AOR,
    D.NO_CREDENTIAL: C.DROP_NO_CREDENTIAL,
    D.ADMISSION_LIMITED: C.DROP_ADMISSION_LIMITED,
    D.UNTRUSTED: C.DROP_UNTRUSTED,
    D.UNTRUSTED_AGENCY: C.DROP_UNTRUSTED_AGENCY,
    D.BAD_CREDENTIAL: C.DROP_BAD_CREDENTIAL,
    D.CREDENTIAL_SCOPE: C.DROP_CREDENTIAL_SCOPE,
    D.ROLE_SCOPE: C.DROP_ROLE_SCOPE,
    D.BAD_HANDOVER: C.DROP_BAD_HANDOVER,
    D.HANDOVER_SIGNER: C.DROP_HANDOVER_SIGNER,
    D.CREDENTIAL_EXPIRED: C.DROP_CREDENTIAL_EXPIRED,
    D.REVOKED: C.DROP_REVOKED,
    D.CREDENTIAL_REVOKED: C.DROP_CREDENTIAL_REVOKED,
    D.TRUST_UNAUTHORISED: C.DROP_TRUST_UNAUTHORISED,
    D.TRUST_QUOTA: C.DROP_TRUST_QUOTA,
    D.TRUST_NOT_DURABLE: C.DROP_TRUST_NOT_DURABLE,
    D.REPLAYED_OLD_SEQ: C.DROP_REPLAYED_OLD_SEQ,
    D.FUTURE_DATED: C.DROP_FUTURE_DATED,
    D.EXPIRED: C.DROP_EXPIRED,
    D.AOR_CLAIMS_FULL: C.DROP_AOR_CLAIMS_FULL,
    D.TABLE_FULL: C.DROP_TABLE_FULL,
    D.MEDIA_RATE_LIMITED: C.DROP_MEDIA_RATE_LIMITED,
    D.MEDIA_TTL_EXPIRED: C.DROP_MEDIA_TTL_EXPIRED,
    D.MEDIA_MALFORMED: C.DROP_MEDIA_MALFORMED,
    D.MEDIA_TRUNCATED: C.DROP_MEDIA_TRUNCATED,
    D.MEDIA_TRAILING: C.DROP_MEDIA_TRAILING,
    D.MEDIA_OVERSIZED: C.DROP_MEDIA_OVERSIZED,
    D.MEDIA_UNKNOWN_TYPE: C.DROP_MEDIA_UNKNOWN_TYPE,
    D.OTHER: C.DROP_OTHER,
}

#: The counter of each kind of frame sent (a test checks every tag has one).
TX_COUNTERS: Final[Mapping[TxTag, OverlayCounter]] = {
    TxTag.HELLO: C.TX_HELLO,
    TxTag.BINDING: C.TX_BINDING,
    TxTag.BINDING_RESEND: C.TX_BINDING_RESEND,
    TxTag.TOMBSTONE_ECHO: C.TX_TOMBSTONE_ECHO,
    TxTag.TOMBSTONE_RESEND: C.TX_TOMBSTONE_RESEND,
    TxTag.UNICAST: C.TX_UNICAST,
    TxTag.ACK: C.TX_ACK,
    TxTag.MEDIA: C.TX_MEDIA,
    TxTag.DIGEST: C.TX_DIGEST,
    TxTag.SUMMARY: C.TX_SUMMARY,
    TxTag.PULL: C.TX_PULL,
    TxTag.RECORDS: C.TX_RECORDS,
    TxTag.TRUST: C.TX_TRUST,
    TxTag.TRUST_IDS: C.TX_TRUST_IDS,
    TxTag.TRUST_PULL: C.TX_TRUST_PULL,
}

del C, D
