"""The SIP gateway's counters, drop reasons and SDP refusals, each an Enum.

Every counter of the gateway (and of its registrar, contacts, admission and custody parts,
which share its ``Counter``) is a member of :class:`GatewayCounter`; its value is the name
the status output and the tests read. Per-reason counters are reached through explicit
tables -- :data:`DROP_COUNTERS` (a dropped message's
:class:`~meshcomm.sip.counters.SipDecodeReason`), :data:`SDP_REFUSAL_COUNTERS`
(:class:`SdpRefusal`), :data:`DIRECTION_COUNTERS` (a journaled message's
:class:`~meshcomm.node.gateway.types.Direction`) and
:data:`meshcomm.node.gateway.admission.SHED_COUNTERS` (a shed verdict) -- never by
formatting a name; a test checks each table covers its Enum. Parsers report their reason
as text (``DecodeError.reason``, ``MediaSetupError.reason``): ``of`` turns it into a
member.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from meshcomm.errors import OTHER_REASON, ReasonEnum
from meshcomm.node.gateway.types import Direction
from meshcomm.sip.counters import SipDecodeReason


class SdpRefusal(ReasonEnum):
    """Why the media layer refused an SDP body crossing the gateway."""

    MALFORMED = "malformed"
    BAD_SDP = "bad_sdp"
    SDP_LIMIT = "sdp_limit"
    BAD_MEDIA_ATTRIBUTE = "bad_media_attribute"
    BAD_MEDIA_KEY = "bad_media_key"
    BAD_MEDIA_NONCE = "bad_media_nonce"
    MEDIA_EXHAUSTED = "media_exhausted"
    CALL_ID_TOO_LONG = "call_id_too_long"
    #: a reason text no member names
    OTHER = OTHER_REASON


class GatewayCounter(StrEnum):
    """Every counter of the SIP gateway (the value is the reported name)."""

    ACKS_ABSORBED = "acks_absorbed"
    ACKS_DROPPED_SDP = "acks_dropped_sdp"
    ACKS_DUPLICATE_ABSORBED = "acks_duplicate_absorbed"
    ACKS_UNROUTABLE = "acks_unroutable"
    ANSWERED_UNDECODABLE = "answered_undecodable"
    CALLS_ABANDONED_FAR = "calls_abandoned_far"
    CONTACT_TOKENS_UNKNOWN = "contact_tokens_unknown"
    CONTACTS_REWRITTEN_TO_CLIENT = "contacts_rewritten_to_client"
    CONTACTS_REWRITTEN_TO_MESH = "contacts_rewritten_to_mesh"
    DIALOG_ROUTED = "dialog_routed"
    DIALOGS_AFTER_END_IGNORED = "dialogs_after_end_ignored"
    DIALOGS_EVICTED = "dialogs_evicted"
    DUPLICATES_ABSORBED = "duplicates_absorbed"
    DUPLICATES_ANSWERED = "duplicates_answered"
    HOLD_QUOTA_REFUSED = "hold_quota_refused"
    KEEPALIVES = "keepalives"
    MESH_SEND_ERRORS = "mesh_send_errors"
    MESSAGES_HELD = "messages_held"
    MESSAGES_HOLD_FAILED = "messages_hold_failed"
    MESSAGES_HOLD_UNCONFIRMED = "messages_hold_unconfirmed"
    MESSAGES_NOT_HELD = "messages_not_held"
    MESSAGES_REFUSED_FULL = "messages_refused_full"
    OVERLOADED = "overloaded"
    PROVISIONAL_AFTER_FINAL = "provisional_after_final"
    REGISTER_ANNOUNCE_LIMITED = "register_announce_limited"
    REGISTER_CLIENT_QUOTA = "register_client_quota"
    REGISTER_CONFLICTS = "register_conflicts"
    REGISTER_EVICTED_FULL = "register_evicted_full"
    REGISTER_EVICTED_HOST_QUOTA = "register_evicted_host_quota"
    REGISTER_FULL = "register_full"
    REGISTER_HOST_FULL = "register_host_full"
    REGISTRATIONS_EXPIRED = "registrations_expired"
    RESPONSES_DROPPED_SDP = "responses_dropped_sdp"
    RESPONSES_NOT_OURS = "responses_not_ours"
    RESPONSES_STRAY = "responses_stray"
    RETRANSMISSIONS_ABSORBED = "retransmissions_absorbed"
    RETRANSMISSIONS_SENT = "retransmissions_sent"
    SDP_AFTER_END_REFUSED = "sdp_after_end_refused"
    SHED_DESTINATION_STALE = "shed_destination_stale"
    SHED_NOT_JOURNALED = "shed_not_journaled"
    STORED_UNDELIVERABLE = "stored_undeliverable"
    TIMEOUTS = "timeouts"
    REMOTE_RESOLVES = "remote_resolves"    # an AoR looked up beyond the island (issue 10)
    TO_UPSTREAM = "to_upstream"            # forwarded to the upstream SIP proxy (issue 10)
    REMOTE_DELIVERY_TRIES = "remote_delivery_tries"  # held MESSAGEs sent beyond the island
    # per journaled direction, shed verdict, drop reason and SDP refusal
    SIP_FROM_CLIENT = "sip_from-client"
    SIP_FROM_MESH = "sip_from-mesh"
    SIP_TO_CLIENT = "sip_to-client"
    SIP_TO_MESH = "sip_to-mesh"
    SIP_ORIGINATED = "sip_originated"
    SIP_DROPPED = "sip_dropped"
    SHED_SOURCE_RATE = "shed_source_rate"
    SHED_GLOBAL_RATE = "shed_global_rate"
    SHED_SOURCE_PENDING = "shed_source_pending"
    SHED_PENDING = "shed_pending"
    DROPPED_OVERSIZE = "dropped_oversize"
    DROPPED_MALFORMED = "dropped_malformed"
    DROPPED_TRUNCATED = "dropped_truncated"
    DROPPED_FRAMING = "dropped_framing"
    DROPPED_VERSION = "dropped_version"
    DROPPED_RANGE = "dropped_range"
    DROPPED_BAD_SDP = "dropped_bad_sdp"
    DROPPED_SDP_LIMIT = "dropped_sdp_limit"
    DROPPED_BAD_PIDF = "dropped_bad_pidf"
    DROPPED_PIDF_LIMIT = "dropped_pidf_limit"
    DROPPED_UNSUPPORTED = "dropped_unsupported"
    DROPPED_OTHER = "dropped_other"
    SDP_REFUSED_MALFORMED = "sdp_refused_malformed"
    SDP_REFUSED_BAD_SDP = "sdp_refused_bad_sdp"
    SDP_REFUSED_SDP_LIMIT = "sdp_refused_sdp_limit"
    SDP_REFUSED_BAD_MEDIA_ATTRIBUTE = "sdp_refused_bad_media_attribute"
    SDP_REFUSED_BAD_MEDIA_KEY = "sdp_refused_bad_media_key"
    SDP_REFUSED_BAD_MEDIA_NONCE = "sdp_refused_bad_media_nonce"
    SDP_REFUSED_MEDIA_EXHAUSTED = "sdp_refused_media_exhausted"
    SDP_REFUSED_CALL_ID_TOO_LONG = "sdp_refused_call_id_too_long"
    SDP_REFUSED_OTHER = "sdp_refused_other"


#: The counter of each drop reason (a test checks every reason has one).
DROP_COUNTERS: Final[Mapping[SipDecodeReason, GatewayCounter]] = {
    SipDecodeReason.OVERSIZE: GatewayCounter.DROPPED_OVERSIZE,
    SipDecodeReason.MALFORMED: GatewayCounter.DROPPED_MALFORMED,
    SipDecodeReason.TRUNCATED: GatewayCounter.DROPPED_TRUNCATED,
    SipDecodeReason.FRAMING: GatewayCounter.DROPPED_FRAMING,
    SipDecodeReason.VERSION: GatewayCounter.DROPPED_VERSION,
    SipDecodeReason.RANGE: GatewayCounter.DROPPED_RANGE,
    SipDecodeReason.BAD_SDP: GatewayCounter.DROPPED_BAD_SDP,
    SipDecodeReason.SDP_LIMIT: GatewayCounter.DROPPED_SDP_LIMIT,
    SipDecodeReason.BAD_PIDF: GatewayCounter.DROPPED_BAD_PIDF,
    SipDecodeReason.PIDF_LIMIT: GatewayCounter.DROPPED_PIDF_LIMIT,
    SipDecodeReason.UNSUPPORTED: GatewayCounter.DROPPED_UNSUPPORTED,
    SipDecodeReason.OTHER: GatewayCounter.DROPPED_OTHER,
}

#: The counter of each SDP refusal (a test checks every refusal has one).
SDP_REFUSAL_COUNTERS: Final[Mapping[SdpRefusal, GatewayCounter]] = {
    SdpRefusal.MALFORMED: GatewayCounter.SDP_REFUSED_MALFORMED,
    SdpRefusal.BAD_SDP: GatewayCounter.SDP_REFUSED_BAD_SDP,
    SdpRefusal.SDP_LIMIT: GatewayCounter.SDP_REFUSED_SDP_LIMIT,
    SdpRefusal.BAD_MEDIA_ATTRIBUTE: GatewayCounter.SDP_REFUSED_BAD_MEDIA_ATTRIBUTE,
    SdpRefusal.BAD_MEDIA_KEY: GatewayCounter.SDP_REFUSED_BAD_MEDIA_KEY,
    SdpRefusal.BAD_MEDIA_NONCE: GatewayCounter.SDP_REFUSED_BAD_MEDIA_NONCE,
    SdpRefusal.MEDIA_EXHAUSTED: GatewayCounter.SDP_REFUSED_MEDIA_EXHAUSTED,
    SdpRefusal.CALL_ID_TOO_LONG: GatewayCounter.SDP_REFUSED_CALL_ID_TOO_LONG,
    SdpRefusal.OTHER: GatewayCounter.SDP_REFUSED_OTHER,
}

#: The counter of each journaled direction (a test checks every direction has one).
DIRECTION_COUNTERS: Final[Mapping[Direction, GatewayCounter]] = {
    Direction.FROM_CLIENT: GatewayCounter.SIP_FROM_CLIENT,
    Direction.FROM_MESH: GatewayCounter.SIP_FROM_MESH,
    Direction.TO_CLIENT: GatewayCounter.SIP_TO_CLIENT,
    Direction.TO_MESH: GatewayCounter.SIP_TO_MESH,
    Direction.ORIGINATED: GatewayCounter.SIP_ORIGINATED,
    Direction.DROPPED: GatewayCounter.SIP_DROPPED,
}
