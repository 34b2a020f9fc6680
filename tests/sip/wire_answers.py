"""The final answer a node's SIP gateway sends to every torture vector arriving over the wire
(from an unregistered client socket), beside the parser's verdict table (torture_table.py).

The gateway is a proxy and registrar (RFC 3261 §16, §10.3), not the final UAS: it answers
what a proxy must (400 for what it cannot parse but can answer, 505, 416, 420 for
Proxy-Require, 483 at Max-Forwards 0, 403 for a Route to a host that is no node: not an
open relay) and routes the rest, which for these vectors' targets (nobody registered them)
ends in 404. UAS-level answers (415, 406, 420 for Require) are the UA's: test_ua_torture.py.
``None``: nothing is sent (a response, or a request whose answer cannot be formed).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WireAnswer:
    status: int | None
    why: str


NOT_FOUND = "valid request for a target nobody registered: routed, 404"
NOT_A_RELAY = "its Route names a host that is no node: 403 (the gateway is not an open relay)"
REGISTERED = "valid REGISTER: the gateway is the registrar, 200"
RESPONSE = "a response to no request of ours: dropped"
SALVAGED = "refused by the parser; answered 400 from the salvaged headers (RFC 4475)"

WIRE_ANSWERS: dict[str, WireAnswer] = {
    "rfc4475/wsinv": WireAnswer(403, NOT_A_RELAY),
    "rfc4475/intmeth": WireAnswer(404, NOT_FOUND + " (unknown methods are proxied)"),
    "rfc4475/esc01": WireAnswer(404, NOT_FOUND),
    "rfc4475/escnull": WireAnswer(200, REGISTERED),
    "rfc4475/esc02": WireAnswer(404, NOT_FOUND),
    "rfc4475/lwsdisp": WireAnswer(404, NOT_FOUND),
    "rfc4475/longreq": WireAnswer(404, NOT_FOUND),
    "rfc4475/dblreq": WireAnswer(200, REGISTERED + "; the INVITE after it is ignored (§18.3)"),
    "rfc4475/semiuri": WireAnswer(404, NOT_FOUND),
    "rfc4475/transports": WireAnswer(404, NOT_FOUND),
    "rfc4475/mpart01": WireAnswer(403, NOT_A_RELAY),
    "rfc4475/unreason": WireAnswer(None, RESPONSE),
    "rfc4475/noreason": WireAnswer(None, RESPONSE),
    "rfc4475/badinv01": WireAnswer(400, SALVAGED),
    "rfc4475/clerr": WireAnswer(400, SALVAGED),
    "rfc4475/ncl": WireAnswer(400, SALVAGED),
    "rfc4475/scalar02": WireAnswer(400, "CSeq >= 2**31 refused where parsed: " + SALVAGED),
    "rfc4475/scalarlg": WireAnswer(None, "response with CSeq >= 2**31: refused, dropped"),
    "rfc4475/quotbal": WireAnswer(400, SALVAGED),
    "rfc4475/ltgtruri": WireAnswer(400, SALVAGED),
    "rfc4475/lwsruri": WireAnswer(400, SALVAGED),
    "rfc4475/lwsstart": WireAnswer(400, SALVAGED),
    "rfc4475/trws": WireAnswer(400, SALVAGED),
    "rfc4475/escruri": WireAnswer(400, "flagged defect: 400"),
    "rfc4475/baddate": WireAnswer(400, "flagged defect: 400"),
    "rfc4475/regbadct": WireAnswer(400, "flagged defect: 400"),
    "rfc4475/badaspec": WireAnswer(400, SALVAGED),
    "rfc4475/baddn": WireAnswer(400, SALVAGED),
    "rfc4475/badvers": WireAnswer(505, "SIP/7.0: 505 Version Not Supported"),
    "rfc4475/mismatch01": WireAnswer(400, "CSeq method mismatch: 400"),
    "rfc4475/mismatch02": WireAnswer(400, "CSeq method mismatch: 400 (the RFC allows 400 or "
                                          "501; a proxy does not know which methods exist)"),
    "rfc4475/bigcode": WireAnswer(None, "status code 4294967301: response dropped"),
    "rfc4475/badbranch": WireAnswer(400, "branch is only the magic cookie: 400"),
    "rfc4475/insuf": WireAnswer(400, "no Call-ID/From/To: 400 from the Via and CSeq (3.3.1)"),
    "rfc4475/unkscm": WireAnswer(416, "R-URI scheme unknown: 416"),
    "rfc4475/novelsc": WireAnswer(416, "R-URI scheme unknown: 416"),
    "rfc4475/unksm2": WireAnswer(416, "REGISTER for an isbn: AoR: 416"),
    "rfc4475/bext01": WireAnswer(420, "Proxy-Require with unknown options: 420 + Unsupported"
                                      " (§16.3 item 4)"),
    "rfc4475/invut": WireAnswer(404, NOT_FOUND + " (Content-Type is the UAS's: 415 there)"),
    "rfc4475/regaut01": WireAnswer(200, REGISTERED + " (the mesh registrar does not run "
                                        "digest authentication; 401 would need it)"),
    "rfc4475/multi01": WireAnswer(400, "several Call-ID/CSeq/From/To: 400"),
    "rfc4475/mcl01": WireAnswer(400, "two Content-Length values: 400 (3.3.9)"),
    "rfc4475/bcast": WireAnswer(None, RESPONSE),
    "rfc4475/zeromf": WireAnswer(483, "Max-Forwards 0 at a proxy: 483 Too Many Hops (3.3.11)"),
    "rfc4475/cparam01": WireAnswer(200, REGISTERED),
    "rfc4475/cparam02": WireAnswer(200, REGISTERED),
    "rfc4475/regescrt": WireAnswer(200, REGISTERED),
    "rfc4475/sdp01": WireAnswer(404, NOT_FOUND + " (Accept is the UAS's: 406 there)"),
    "rfc4475/inv2543": WireAnswer(404, NOT_FOUND + " (an RFC 2543 INVITE is processed)"),
    "rfc5118/ipv6-good": WireAnswer(200, REGISTERED),
    "rfc5118/ipv6-bad": WireAnswer(400, SALVAGED),
    "rfc5118/port-ambiguous": WireAnswer(200, REGISTERED),
    "rfc5118/port-unambiguous": WireAnswer(200, REGISTERED),
    "rfc5118/via-received-param-with-delim": WireAnswer(404, NOT_FOUND),
    "rfc5118/via-received-param-no-delim": WireAnswer(404, NOT_FOUND),
    "rfc5118/ipv6-in-sdp": WireAnswer(400, SALVAGED),
    "rfc5118/ipv6-in-sdp-cl-corrected": WireAnswer(404, NOT_FOUND),
    "rfc5118/mult-ip-in-header": WireAnswer(404, NOT_FOUND),
    "rfc5118/mult-ip-in-sdp": WireAnswer(404, NOT_FOUND),
    "rfc5118/ipv4-mapped-ipv6": WireAnswer(404, NOT_FOUND),
    "rfc5118/ipv6-incorrect-abnf-3-colons": WireAnswer(400, SALVAGED),
    "rfc5118/ipv6-correct-abnf-2-colons": WireAnswer(404, NOT_FOUND),
}
