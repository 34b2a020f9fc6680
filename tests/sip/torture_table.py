"""Expected verdict for every SIP torture vector (RFC 4475, RFC 5118) in tests/sip/vectors/.

For each vector: what ``parse_message_untrusted`` does with it, and which status a user agent
should answer with (``None``: send nothing, because the message is a response or cannot be
answered). The UA core's tests use ``status`` for the application-layer cases.

Kinds:
* ``PARSES``       -- parses, no defects; fields asserted in test_torture.py.
* ``FLAGGED``      -- parses, ``defects`` lists the finding; a UA answers ``status``
                      (RFC 4475 says a server may accept it, or should reject it while the
                      message is still good enough to build the response from).
* ``DECODE_ERROR`` -- DecodeError with ``status_hint == hint``; a request that still has a
                      Via is answered ``status`` from its salvaged headers
                      (meshcomm/sip/salvage.py; RFC 4475 asks for 400 to almost every
                      invalid request); status None: a response, nothing can be sent.
* ``APPLICATION``  -- parses, no defects; the UA's own logic answers ``status``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    PARSES = "parses"
    FLAGGED = "flagged"
    DECODE_ERROR = "decode-error"
    APPLICATION = "application"


@dataclass(frozen=True)
class Verdict:
    section: str
    kind: Kind
    status: int | None
    why: str
    defects: tuple[str, ...] = ()
    hint: int = 400  # DecodeError.status_hint expected for DECODE_ERROR


P, F, D, A = Kind.PARSES, Kind.FLAGGED, Kind.DECODE_ERROR, Kind.APPLICATION

TORTURE_TABLE: dict[str, Verdict] = {
    # ---------------------------------------------------------- RFC 4475 §3.1.1 valid
    "rfc4475/wsinv": Verdict(
        "4475 3.1.1.1", P, None, "folding, escapes in quotes, LWS everywhere, compact names"
    ),
    "rfc4475/intmeth": Verdict(
        "4475 3.1.1.2", P, None, "unusual but legal characters in every field, UTF-8 values"
    ),
    "rfc4475/esc01": Verdict(
        "4475 3.1.1.3", P, None, "%-escapes in R-URI user, To user, Contact params"
    ),
    "rfc4475/escnull": Verdict("4475 3.1.1.4", P, None, "%00 in user parts is legal"),
    "rfc4475/esc02": Verdict(
        "4475 3.1.1.5", P, None, "escapes are literal in method, quoted strings, header names"
    ),
    "rfc4475/lwsdisp": Verdict("4475 3.1.1.6", P, None, "no LWS between display name and <"),
    "rfc4475/longreq": Verdict(
        "4475 3.1.1.7", P, None, "long values, 34 Vias with every case/compact/spacing"
    ),
    "rfc4475/dblreq": Verdict(
        "4475 3.1.1.8",
        P,
        None,
        "REGISTER with Content-Length 0; the INVITE after it is ignored (§18.3)",
    ),
    "rfc4475/semiuri": Verdict(
        "4475 3.1.1.9", P, None, "; in the R-URI user part; folded Accept list"
    ),
    "rfc4475/transports": Verdict(
        "4475 3.1.1.10", P, None, "UDP, SCTP, TLS, UNKNOWN, TCP transports in Via"
    ),
    "rfc4475/mpart01": Verdict(
        "4475 3.1.1.11", P, None, "multipart body with binary part kept as bytes"
    ),
    "rfc4475/unreason": Verdict("4475 3.1.1.12", P, None, "UTF-8 reason phrase"),
    "rfc4475/noreason": Verdict("4475 3.1.1.13", P, None, "empty reason phrase"),
    # ---------------------------------------------------------- RFC 4475 §3.1.2 invalid
    "rfc4475/badinv01": Verdict(
        "4475 3.1.2.1", D, 400, "Via ';;,;,,' is unparseable: answered 400 along the raw Via"
    ),
    "rfc4475/clerr": Verdict(
        "4475 3.1.2.2", D, 400, "Content-Length 9999 exceeds the datagram (§18.3: error)"
    ),
    "rfc4475/ncl": Verdict(
        "4475 3.1.2.3", D, 400, "negative Content-Length cannot frame the body"
    ),
    "rfc4475/scalar02": Verdict(
        "4475 3.1.2.4",
        D,
        400,
        "CSeq >= 2**31: refused where parsed (400 per RFC 3261 §8.1.1.5; the gateway answers"
        " it from the salvaged headers)",
    ),
    "rfc4475/scalarlg": Verdict(
        "4475 3.1.2.5", D, None, "response with out-of-range CSeq: refused where parsed, dropped"
    ),
    "rfc4475/quotbal": Verdict("4475 3.1.2.6", D, 400, "unterminated quoted string in To"),
    "rfc4475/ltgtruri": Verdict("4475 3.1.2.7", D, 400, "<> around the Request-URI"),
    "rfc4475/lwsruri": Verdict("4475 3.1.2.8", D, 400, "LWS inside the Request-URI"),
    "rfc4475/lwsstart": Verdict(
        "4475 3.1.2.9", D, 400, "multiple SP between Request-Line elements"
    ),
    "rfc4475/trws": Verdict("4475 3.1.2.10", D, 400, "SP after SIP-Version in the Request-Line"),
    "rfc4475/escruri": Verdict(
        "4475 3.1.2.11",
        F,
        400,
        "escaped headers in the R-URI: RFC allows 400 or ignoring them",
        defects=("request-uri-has-headers",),
    ),
    "rfc4475/baddate": Verdict(
        "4475 3.1.2.12",
        F,
        400,
        "non-GMT Date: RFC allows 400 or ignoring Date",
        defects=("date-invalid",),
    ),
    "rfc4475/regbadct": Verdict(
        "4475 3.1.2.13",
        F,
        400,
        "Contact URI with ?header not in <>: 400",
        defects=("contact-invalid",),
    ),
    "rfc4475/badaspec": Verdict(
        "4475 3.1.2.14", D, 400, "spaces inside <> of To: rejected (RFC allows 400)"
    ),
    "rfc4475/baddn": Verdict(
        "4475 3.1.2.15", D, 400, "unquoted display names with commas in From/To"
    ),
    "rfc4475/badvers": Verdict(
        "4475 3.1.2.16", D, 505, "SIP/7.0: 505 Version Not Supported", hint=505
    ),
    "rfc4475/mismatch01": Verdict(
        "4475 3.1.2.17",
        F,
        400,
        "CSeq method INVITE vs OPTIONS request: 400",
        defects=("cseq-method-mismatch",),
    ),
    "rfc4475/mismatch02": Verdict(
        "4475 3.1.2.18",
        F,
        501,
        "unknown method and CSeq mismatch: 501 (400 acceptable)",
        defects=("cseq-method-mismatch",),
    ),
    "rfc4475/bigcode": Verdict(
        "4475 3.1.2.19", D, None, "status code 4294967301: response dropped"
    ),
    # ---------------------------------------------------------- RFC 4475 §3.2 transaction layer
    "rfc4475/badbranch": Verdict(
        "4475 3.2.1",
        F,
        400,
        "branch is only the magic cookie: 400 (or RFC 2543 matching)",
        defects=("branch-cookie-only",),
    ),
    # ---------------------------------------------------------- RFC 4475 §3.3 application layer
    "rfc4475/insuf": Verdict(
        "4475 3.3.1",
        D,
        400,
        "no Call-ID/From/To: 400 from the salvaged Via and CSeq (RFC 4475 3.3.1)",
    ),
    "rfc4475/unkscm": Verdict(
        "4475 3.3.2", A, 416, "R-URI scheme unknown: 416 Unsupported URI Scheme"
    ),
    "rfc4475/novelsc": Verdict("4475 3.3.3", A, 416, "soap.beep R-URI: 416 Unsupported URI Scheme"),
    "rfc4475/unksm2": Verdict(
        "4475 3.3.4",
        A,
        416,
        "REGISTER with isbn: To and name: Contact: 416 for the unsupported AoR scheme",
    ),
    "rfc4475/bext01": Verdict(
        "4475 3.3.5",
        A,
        420,
        "Require with unknown options: 420 Bad Extension with Unsupported listing both",
    ),
    "rfc4475/invut": Verdict(
        "4475 3.3.6",
        A,
        415,
        "Content-Type application/unknownformat: 415 with Accept: application/sdp",
    ),
    "rfc4475/regaut01": Verdict(
        "4475 3.3.7",
        A,
        401,
        "unknown Authorization scheme: an authenticating registrar answers 401 + challenge",
    ),
    "rfc4475/multi01": Verdict(
        "4475 3.3.8",
        F,
        400,
        "several Call-ID/CSeq/From/To (and Max-Forwards): 400",
        defects=(
            "duplicate-header:call-id",
            "duplicate-header:cseq",
            "duplicate-header:from",
            "duplicate-header:to",
            "duplicate-header:max-forwards",
        ),
    ),
    "rfc4475/mcl01": Verdict(
        "4475 3.3.9", D, 400, "two Content-Length values cannot frame the body: 400"
    ),
    "rfc4475/bcast": Verdict(
        "4475 3.3.10",
        A,
        None,
        "200 OK with 2nd Via 255.255.255.255: a UA processes it normally (top Via only)",
    ),
    "rfc4475/zeromf": Verdict(
        "4475 3.3.11",
        A,
        200,
        "Max-Forwards 0 at the UAS: answer the OPTIONS (200); a proxy would send 483",
    ),
    "rfc4475/cparam01": Verdict(
        "4475 3.3.12",
        A,
        200,
        "Contact header param 'unknownparam' on REGISTER: 200, binding kept with it",
    ),
    "rfc4475/cparam02": Verdict(
        "4475 3.3.13", A, 200, "Contact URI param 'unknownparam' on REGISTER: 200"
    ),
    "rfc4475/regescrt": Verdict(
        "4475 3.3.14",
        A,
        200,
        "Contact URI with escaped Route header on REGISTER: 200, stored as is",
    ),
    "rfc4475/sdp01": Verdict(
        "4475 3.3.15", A, 406, "Accept lacks application/sdp: 406 Not Acceptable (400 also allowed)"
    ),
    # ---------------------------------------------------------- RFC 4475 §3.4 backward compat.
    "rfc4475/inv2543": Verdict(
        "4475 3.4.1",
        A,
        200,
        "RFC 2543 INVITE (no branch, Max-Forwards, Content-Length): process normally,"
        " matching its transaction by the RFC 2543 rules",
    ),
    # ---------------------------------------------------------- RFC 5118 IPv6
    "rfc5118/ipv6-good": Verdict("5118 4.1", P, None, "IPv6 references in R-URI, Via and Contact"),
    "rfc5118/ipv6-bad": Verdict("5118 4.2", D, 400, "IPv6 address without [] in the R-URI: 400"),
    "rfc5118/port-ambiguous": Verdict(
        "5118 4.3", P, None, "[2001:db8::10:5070] is a valid address with no port"
    ),
    "rfc5118/port-unambiguous": Verdict("5118 4.4", P, None, "[2001:db8::10]:5070 has port 5070"),
    "rfc5118/via-received-param-with-delim": Verdict(
        "5118 4.5", P, None, "received=[IPv6] is tolerated; Via.received strips the []"
    ),
    "rfc5118/via-received-param-no-delim": Verdict(
        "5118 4.5", P, None, "received=IPv6 without [] is the grammar's form"
    ),
    "rfc5118/ipv6-in-sdp": Verdict(
        "5118 4.6",
        D,
        400,
        "as printed in the RFC, Content-Length 268 > the 251-octet body: 400 (§18.3)",
    ),
    "rfc5118/ipv6-in-sdp-cl-corrected": Verdict(
        "5118 4.6", P, None, "the 4.6 message with Content-Length corrected to 251"
    ),
    "rfc5118/mult-ip-in-header": Verdict("5118 4.7", P, None, "Via list mixing IPv4 and IPv6"),
    "rfc5118/mult-ip-in-sdp": Verdict(
        "5118 4.8",
        P,
        None,
        "parses; RFC text's Content-Length 181 < body 189, the rest is ignored (§18.3)",
    ),
    "rfc5118/ipv4-mapped-ipv6": Verdict(
        "5118 4.9",
        P,
        None,
        "IPv4-mapped IPv6 addresses; RFC Content-Length 236 < body 245, the rest is ignored",
    ),
    "rfc5118/ipv6-incorrect-abnf-3-colons": Verdict(
        "5118 4.10", D, 400, "':::' is not an IPv6 address; rejected (the RFC allows either)"
    ),
    "rfc5118/ipv6-correct-abnf-2-colons": Verdict(
        "5118 4.10", P, None, "[2001:db8::192.0.2.1] is valid"
    ),
}
