"""The static tables of compact SIP (:mod:`meshcomm.sip.compact`): frozen wire format.

Changing, reordering or removing an entry changes what every peer decodes; entries are
only ever appended (up to :data:`MAX_WORDS`), and a new incompatible table needs a new
format code. The words are the start lines, header starts and values that SIP, SDP and
PIDF traffic of the mesh carries most (in the spirit of RFC 3485's static dictionary);
the reason phrases are RFC 3261 §21's, so a standard status line costs one byte.
"""

from __future__ import annotations

from typing import Final

#: Largest number of static words (one byte code each, 0x80-0xFF).
MAX_WORDS: Final = 128

_METHODS: Final = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE",
                   "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "PRACK", "UPDATE", "REFER")

_STATUS_LINES: Final = (
    "100 Trying", "180 Ringing", "183 Session Progress", "200 OK", "202 Accepted",
    "400 Bad Request", "401 Unauthorized", "403 Forbidden", "404 Not Found",
    "407 Proxy Authentication Required", "408 Request Timeout",
    "480 Temporarily Unavailable", "481 Call/Transaction Does Not Exist",
    "486 Busy Here", "487 Request Terminated",
    "488 Not Acceptable Here",
    "500 Server Internal Error", "503 Service Unavailable",
    "603 Decline")

_HEADER_STARTS: Final = (
    "Via: SIP/2.0/UDP ", "Via: SIP/2.0/TCP ", "v: SIP/2.0/UDP ", "Max-Forwards: 70",
    "Max-Forwards: 69", "Max-Forwards: ", "From: <sip:", "From: ", "To: <sip:", "To: ",
    "Call-ID: ", "CSeq: ", "Contact: <sip:", "Contact: ", "User-Agent: ", "Server: ",
    "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY",
    "Allow: ", "Supported: ", "Require: ", "Content-Type: text/plain;charset=utf-8",
    "Content-Type: text/plain", "Content-Type: application/sdp",
    "Content-Type: application/pidf+xml", "Content-Type: ", "Content-Length: ",
    "Record-Route: <sip:", "Route: <sip:", "Expires: ", "Event: presence", "Event: ",
    "Subscription-State: active;expires=", "Subscription-State: ", "Accept: ",
    "Authorization: Digest ", "WWW-Authenticate: Digest ", "Proxy-Authorization: Digest ",
    "Proxy-Authenticate: Digest ", "P-Asserted-Identity: <sip:", "P-Preferred-Identity: ",
    "Allow-Events: ", "Retry-After: ", "Reason: ",
    "f: ", "t: ", "i: ", "m: ", "l: ", "c: ", "k: ")

_VALUES: Final = (
    " SIP/2.0", "SIP/2.0 ", ";branch=z9hG4bK", ";tag=", ";rport", ";received=", ";lr;mesh=",
    ";lr", ";mesh=", ";transport=tcp", ";expires=", "@incident.local>", "@incident.local",
    "127.0.0.1", "<sip:", "sip:", ">", ", ", " MESSAGE", " INVITE", " ACK", " BYE",
    " CANCEL", " REGISTER", " SUBSCRIBE", " NOTIFY", "meshcomm/0.1", "presence")


def _words() -> tuple[str, ...]:
    words = [f"{m} sip:" for m in _METHODS]
    words += [f"SIP/2.0 {s}" for s in _STATUS_LINES]
    words += [f"\r\n{h}" for h in _HEADER_STARTS]
    words += list(_VALUES)
    return tuple(words)


#: Code 0x80 + i stands for ``STATIC_WORDS[i]``.
STATIC_WORDS: Final = _words()
assert len(STATIC_WORDS) <= MAX_WORDS and len(set(STATIC_WORDS)) == len(STATIC_WORDS)

#: The preset dictionary of the deflate stage (zlib ``zdict``): SDP, PIDF and SIP text a
#: message is likely to repeat; deflate finds matches nearest the end cheapest, so the most
#: common text comes last.
ZDICT: Final = (
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n"
    b"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:\">\r\n"
    b"<tuple id=\"\"><status><basic>open</basic></status><contact></contact>"
    b"<note></note></tuple></presence>\r\n"
    b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 \r\nt=0 0\r\n"
    b"m=audio  RTP/AVP 0 8 101 111\r\na=rtpmap:111 opus/48000/2\r\n"
    b"a=fmtp:111 stereo=1;sprop-stereo=1\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
    b"a=sendrecv\r\na=rtcp:\r\nm=audio \r\n"
    b"Digest username=\"\", realm=\"\", nonce=\"\", uri=\"sip:\", response=\"\", "
    b"algorithm=MD5, qop=auth, nc=00000001, cnonce=\"\"\r\n"
    b"Supported: replaces, outbound, gruu, path\r\nAccept: application/sdp\r\n"
    b"baresip v3.1.0 (x86_64/linux)\r\nSIPp\r\n"
    b"sip:@incident.local>;tag=\r\nsip:@incident.local\r\n"
)
