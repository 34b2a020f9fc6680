"""Builders for SIP requests and responses (RFC 3261 §8.1.1, §8.2.6, §9.1, §17.1.1.3).

Identifiers (tags, branches, Call-IDs) come from an injected ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from meshcomm.sip.message import NameAddr, SipRequest, SipResponse, Via
from meshcomm.sip.uri import SipUri

#: RFC 3261 §8.1.1.7: every branch we generate starts with the magic cookie.
BRANCH_MAGIC_COOKIE = "z9hG4bK"
#: RFC 3261 §8.1.1.6: the default Max-Forwards.
DEFAULT_MAX_FORWARDS = 70
#: Bits of randomness in a Call-ID (§8.1.1.4: globally unique; cryptographically random
#: identifiers RECOMMENDED).
ID_RANDOM_BITS = 96
#: Bits of randomness in a branch after the magic cookie (§8.1.1.7: unique across space and
#: time for all requests a UA or proxy sends) and in a tag (§19.3: at least 32). 64 bits make
#: a collision among even a million live transactions a 1-in-30-million event; as lower-case
#: hex they cost 8 bytes on the mesh (compact SIP carries hex runs as bytes, issue 13).
BRANCH_RANDOM_BITS = 64
TAG_RANDOM_BITS = 64

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "Version Not Supported",
    513: "Message Too Large", 603: "Decline",
}


def reason_phrase(status: int) -> str:
    return REASON_PHRASES.get(status, "Unknown")


def _random_token(rng: random.Random) -> str:
    return f"{rng.getrandbits(ID_RANDOM_BITS):024x}"


def new_branch(rng: random.Random) -> str:
    return f"{BRANCH_MAGIC_COOKIE}{rng.getrandbits(BRANCH_RANDOM_BITS):016x}"


def new_tag(rng: random.Random) -> str:
    return f"{rng.getrandbits(TAG_RANDOM_BITS):016x}"


def new_call_id(rng: random.Random, host: str) -> str:
    return f"{_random_token(rng)}@{host.strip('[]')}"


def build_request(method: str, request_uri: SipUri, *, from_addr: NameAddr,
                  to_addr: NameAddr, call_id: str, cseq: int, via: Via,
                  contact: NameAddr | None = None, routes: Sequence[NameAddr] = (),
                  max_forwards: int = DEFAULT_MAX_FORWARDS,
                  extra_headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
                  content_type: str | None = None) -> SipRequest:
    """A request with the six mandatory headers of §8.1.1 in the usual order."""
    headers: list[tuple[str, str]] = [("Via", str(via)), ("Max-Forwards", str(max_forwards))]
    headers += [("Route", str(route)) for route in routes]
    headers += [("From", str(from_addr)), ("To", str(to_addr)), ("Call-ID", call_id),
                ("CSeq", f"{cseq} {method}")]
    if contact is not None:
        headers.append(("Contact", str(contact)))
    headers += list(extra_headers)
    request = SipRequest(method=method, uri=request_uri, headers=tuple(headers))
    if body or content_type is not None:
        request = request.with_body(body, content_type)
    return request


def build_response(request: SipRequest, status: int, reason: str | None = None, *,
                   to_tag: str | None = None, contact: NameAddr | None = None,
                   extra_headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
                   content_type: str | None = None) -> SipResponse:
    """A response to ``request`` per §8.2.6.2: Via, From, Call-ID, CSeq copied; To copied
    with ``to_tag`` added when it has none (never for 100 Trying); Record-Route copied
    into dialog-creating responses (§12.1.1)."""
    headers: list[tuple[str, str]] = [("Via", value) for value in request.header_values("Via")]
    to_addr = request.to_addr
    if to_tag is not None and to_addr.tag is None and status != 100:
        to_addr = to_addr.with_params(tag=to_tag)
    headers += [("From", request.header("From")), ("To", str(to_addr)),
                ("Call-ID", request.call_id), ("CSeq", request.header("CSeq"))]
    if 100 < status < 300 and request.method in ("INVITE", "SUBSCRIBE"):
        headers += [("Record-Route", value) for value in request.header_values("Record-Route")]
    if contact is not None:
        headers.append(("Contact", str(contact)))
    headers += list(extra_headers)
    response = SipResponse(status=status, reason=reason or reason_phrase(status),
                           headers=tuple(headers))
    if body or content_type is not None:
        response = response.with_body(body, content_type)
    return response


def _route_headers(request: SipRequest) -> list[tuple[str, str]]:
    return [("Route", value) for value in request.header_values("Route")]


def build_ack_for_error(request: SipRequest, response: SipResponse) -> SipRequest:
    """ACK for a non-2xx final response to ``request`` (§17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number; To from the response (with its tag);
    one Via equal to the top Via of the INVITE (same branch); the INVITE's Route headers.
    """
    headers: list[tuple[str, str]] = [("Via", str(request.top_via)),
                                      ("Max-Forwards", str(DEFAULT_MAX_FORWARDS))]
    headers += _route_headers(request)
    headers += [("From", request.header("From")), ("To", response.header("To")),
                ("Call-ID", request.call_id), ("CSeq", f"{request.cseq.number} ACK")]
    return SipRequest(method="ACK", uri=request.uri, headers=tuple(headers))


def build_cancel(request: SipRequest) -> SipRequest:
    """CANCEL for a pending ``request`` (§9.1): same Request-URI, Call-ID, To, From and
    CSeq number, one Via equal to the request's top Via, and the request's Route set."""
    headers: list[tuple[str, str]] = [("Via", str(request.top_via)),
                                      ("Max-Forwards", str(DEFAULT_MAX_FORWARDS))]
    headers += _route_headers(request)
    headers += [("From", request.header("From")), ("To", request.header("To")),
                ("Call-ID", request.call_id), ("CSeq", f"{request.cseq.number} CANCEL")]
    return SipRequest(method="CANCEL", uri=request.uri, headers=tuple(headers))
