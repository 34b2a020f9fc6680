"""The SIP user agent's counters and the SIP parser's reasons, as Enums.

Every counter of :class:`~meshcomm.sip.ua.UserAgent` is a :class:`UaCounter` member (the
value is the name the tests and status read). Counters per parser reason, per status
answered to a refused request and per status a request was rejected with are reached
through explicit tables (:data:`UNDECODABLE_COUNTERS`, :data:`ANSWERED_UNDECODABLE_COUNTERS`,
:data:`REJECTED_COUNTERS`), never by formatting a name; a status no table lists counts as
``..._other`` (a test checks every status the UA's source can answer with is listed).
:class:`SipDecodeReason` is also what the gateway journals and counts for a message it
drops.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from meshcomm.errors import OTHER_REASON, ReasonEnum


class SipDecodeReason(ReasonEnum):
    """Why the SIP parser (or a size check before it) refused a message."""

    OVERSIZE = "oversize"
    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    FRAMING = "framing"
    VERSION = "version"
    RANGE = "range"
    BAD_SDP = "bad_sdp"
    SDP_LIMIT = "sdp_limit"
    BAD_PIDF = "bad_pidf"
    PIDF_LIMIT = "pidf_limit"
    #: an authentication scheme, algorithm or qop this side does not implement (digest)
    UNSUPPORTED = "unsupported"
    #: a parser's reason text no member names
    OTHER = OTHER_REASON


class UaCounter(StrEnum):
    """Every counter of the user agent."""

    SERVER_TX_REFUSED = "server_tx_refused"
    RESPONSE_NOT_OURS = "response_not_ours"
    EVENTS_DROPPED = "events_dropped"
    BAD_PIDF = "bad_pidf"
    UNDECODABLE_OVERSIZE = "undecodable_oversize"
    UNDECODABLE_MALFORMED = "undecodable_malformed"
    UNDECODABLE_TRUNCATED = "undecodable_truncated"
    UNDECODABLE_FRAMING = "undecodable_framing"
    UNDECODABLE_VERSION = "undecodable_version"
    UNDECODABLE_RANGE = "undecodable_range"
    UNDECODABLE_BAD_SDP = "undecodable_bad_sdp"
    UNDECODABLE_SDP_LIMIT = "undecodable_sdp_limit"
    UNDECODABLE_BAD_PIDF = "undecodable_bad_pidf"
    UNDECODABLE_PIDF_LIMIT = "undecodable_pidf_limit"
    UNDECODABLE_UNSUPPORTED = "undecodable_unsupported"
    UNDECODABLE_OTHER = "undecodable_other"
    ANSWERED_UNDECODABLE_400 = "answered_undecodable_400"
    ANSWERED_UNDECODABLE_413 = "answered_undecodable_413"
    ANSWERED_UNDECODABLE_414 = "answered_undecodable_414"
    ANSWERED_UNDECODABLE_416 = "answered_undecodable_416"
    ANSWERED_UNDECODABLE_420 = "answered_undecodable_420"
    ANSWERED_UNDECODABLE_505 = "answered_undecodable_505"
    ANSWERED_UNDECODABLE_513 = "answered_undecodable_513"
    ANSWERED_UNDECODABLE_OTHER = "answered_undecodable_other"
    REJECTED_400 = "rejected_400"
    REJECTED_405 = "rejected_405"
    REJECTED_406 = "rejected_406"
    REJECTED_415 = "rejected_415"
    REJECTED_416 = "rejected_416"
    REJECTED_420 = "rejected_420"
    REJECTED_481 = "rejected_481"
    REJECTED_482 = "rejected_482"
    REJECTED_483 = "rejected_483"
    REJECTED_488 = "rejected_488"
    REJECTED_489 = "rejected_489"
    REJECTED_491 = "rejected_491"
    REJECTED_500 = "rejected_500"
    REJECTED_501 = "rejected_501"
    REJECTED_503 = "rejected_503"
    REJECTED_505 = "rejected_505"
    REJECTED_513 = "rejected_513"
    REJECTED_OTHER = "rejected_other"


#: The counter of each parser reason (a test checks every reason has one).
UNDECODABLE_COUNTERS: Final[Mapping[SipDecodeReason, UaCounter]] = {
    SipDecodeReason.OVERSIZE: UaCounter.UNDECODABLE_OVERSIZE,
    SipDecodeReason.MALFORMED: UaCounter.UNDECODABLE_MALFORMED,
    SipDecodeReason.TRUNCATED: UaCounter.UNDECODABLE_TRUNCATED,
    SipDecodeReason.FRAMING: UaCounter.UNDECODABLE_FRAMING,
    SipDecodeReason.VERSION: UaCounter.UNDECODABLE_VERSION,
    SipDecodeReason.RANGE: UaCounter.UNDECODABLE_RANGE,
    SipDecodeReason.BAD_SDP: UaCounter.UNDECODABLE_BAD_SDP,
    SipDecodeReason.SDP_LIMIT: UaCounter.UNDECODABLE_SDP_LIMIT,
    SipDecodeReason.BAD_PIDF: UaCounter.UNDECODABLE_BAD_PIDF,
    SipDecodeReason.PIDF_LIMIT: UaCounter.UNDECODABLE_PIDF_LIMIT,
    SipDecodeReason.UNSUPPORTED: UaCounter.UNDECODABLE_UNSUPPORTED,
    SipDecodeReason.OTHER: UaCounter.UNDECODABLE_OTHER,
}
#: The counter of each status a refused request is answered with (salvage's statuses).
ANSWERED_UNDECODABLE_COUNTERS: Final[Mapping[int, UaCounter]] = {
    400: UaCounter.ANSWERED_UNDECODABLE_400,
    413: UaCounter.ANSWERED_UNDECODABLE_413,
    414: UaCounter.ANSWERED_UNDECODABLE_414,
    416: UaCounter.ANSWERED_UNDECODABLE_416,
    420: UaCounter.ANSWERED_UNDECODABLE_420,
    505: UaCounter.ANSWERED_UNDECODABLE_505,
    513: UaCounter.ANSWERED_UNDECODABLE_513,
}
#: The counter of each status the UA rejects a request with (before the application).
REJECTED_COUNTERS: Final[Mapping[int, UaCounter]] = {
    400: UaCounter.REJECTED_400,
    405: UaCounter.REJECTED_405,
    406: UaCounter.REJECTED_406,
    415: UaCounter.REJECTED_415,
    416: UaCounter.REJECTED_416,
    420: UaCounter.REJECTED_420,
    481: UaCounter.REJECTED_481,
    482: UaCounter.REJECTED_482,
    483: UaCounter.REJECTED_483,
    488: UaCounter.REJECTED_488,
    489: UaCounter.REJECTED_489,
    491: UaCounter.REJECTED_491,
    500: UaCounter.REJECTED_500,
    501: UaCounter.REJECTED_501,
    503: UaCounter.REJECTED_503,
    505: UaCounter.REJECTED_505,
    513: UaCounter.REJECTED_513,
}
