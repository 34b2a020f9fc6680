"""Sans-IO SIP core (RFC 3261). The message layer is re-exported here.

Transactions, dialogs, the user-agent core, SDP and presence live in their own modules of
this package; import them from there.
"""

from meshcomm.sip.grammar import (
    MAX_HEADERS,
    MAX_LINE_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_URI_BYTES,
    MAX_URI_PARAMS,
)
from meshcomm.sip.message import (
    CSeq,
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    parse_message_untrusted,
    parse_name_addr_untrusted,
    parse_via_untrusted,
)
from meshcomm.sip.uri import SipUri, make_sip_uri, parse_uri_untrusted

SipMessage = SipRequest | SipResponse

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_URI_BYTES",
    "MAX_URI_PARAMS",
    "CSeq",
    "NameAddr",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "Via",
    "make_sip_uri",
    "parse_message_untrusted",
    "parse_name_addr_untrusted",
    "parse_uri_untrusted",
    "parse_via_untrusted",
]
