"""Hypothesis strategies for SIP message-layer values the serializer can produce."""

from __future__ import annotations

import ipaddress
import re

from hypothesis import strategies as st

from meshcomm.sip import CSeq, NameAddr, SipRequest, SipResponse, SipUri, Via

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=10)
lower_tokens = tokens.map(str.lower)
line_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=16
)
nonempty_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)

_label = st.from_regex(re.compile(r"[a-z]([a-z0-9-]{0,6}[a-z0-9])?"), fullmatch=True)
hostnames = st.lists(_label, min_size=1, max_size=4).map(".".join)
ipv4s = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6s = st.integers(0, 2**128 - 1).map(lambda n: f"[{ipaddress.IPv6Address(n)}]")
hosts = st.one_of(hostnames, ipv4s, ipv6s)
ports = st.none() | st.integers(0, 65535)

_param_names = nonempty_text.map(str.lower).filter(lambda s: s.lower() == s)
uri_params = st.lists(st.tuples(_param_names, st.none() | nonempty_text), max_size=4).map(tuple)
uri_headers = st.lists(st.tuples(nonempty_text, st.text(max_size=8)), max_size=3).map(tuple)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    user = draw(st.none() | nonempty_text)
    password = None if user is None else draw(st.none() | st.text(max_size=8))
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        password=password,
        host=draw(hosts),
        port=draw(ports),
        params=draw(uri_params),
        headers=draw(uri_headers),
    )


_schemes = st.from_regex(re.compile(r"[a-z][a-z0-9+.\-]{0,8}"), fullmatch=True).filter(
    lambda s: s not in ("sip", "sips")
)
_opaque = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters='<>"\\'),
    min_size=1,
    max_size=20,
)
other_uris = st.builds(lambda s, o: SipUri(scheme=s, opaque=o), _schemes, _opaque)
uris = st.one_of(sip_uris(), other_uris)

_quoted_values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters='\r\n"\\'), max_size=8
).map(lambda s: f'"{s}"')
header_params = st.lists(
    st.tuples(lower_tokens, st.none() | tokens | _quoted_values), max_size=4
).map(tuple)
name_addrs = st.builds(NameAddr, uri=uris, display_name=st.none() | line_text, params=header_params)

_via_params = st.lists(
    st.one_of(
        tokens.map(lambda t: ("branch", "z9hG4bK" + t)),
        ipv4s.map(lambda a: ("received", a)),
        st.none().map(lambda _: ("rport", None)),
        st.integers(0, 65535).map(lambda p: ("rport", str(p))),
        st.tuples(
            lower_tokens.filter(lambda n: n not in ("branch", "received", "rport", "maddr", "ttl")),
            st.none() | tokens,
        ),
    ),
    max_size=4,
).map(tuple)
vias = st.builds(Via, transport=tokens.map(str.upper), host=hosts, port=ports, params=_via_params)
_CALL_ID_PATTERN = r"[A-Za-z0-9.\-!%*_+`'~()<>:\\/\[\]?{}\"]{1,20}(@[A-Za-z0-9.]{1,10})?"
call_ids = st.from_regex(re.compile(_CALL_ID_PATTERN), fullmatch=True)

_KNOWN = {
    "via",
    "from",
    "to",
    "call-id",
    "cseq",
    "content-length",
    "contact",
    "max-forwards",
    "expires",
    "date",
    "v",
    "f",
    "t",
    "i",
    "l",
    "m",
}
extra_headers = st.lists(
    st.tuples(
        tokens.map(lambda t: "X-" + t).filter(lambda n: n.lower() not in _KNOWN),
        line_text.map(str.strip),
    ),
    max_size=5,
)


@st.composite
def _headers(draw: st.DrawFn, method: str) -> tuple[tuple[str, str], ...]:
    via_list = draw(st.lists(vias, min_size=1, max_size=3))
    cseq = CSeq(draw(st.integers(0, 2**31 - 1)), method)
    core = [("Via", str(v)) for v in via_list]
    core += [
        ("From", str(draw(name_addrs))),
        ("To", str(draw(name_addrs))),
        ("Call-ID", draw(call_ids)),
        ("CSeq", str(cseq)),
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
    ]
    contacts = draw(st.lists(name_addrs, max_size=2))
    if contacts:
        core.append(("Contact", ", ".join(str(c) for c in contacts)))
    core += draw(extra_headers)
    return tuple(draw(st.permutations(core)))


@st.composite
def requests(draw: st.DrawFn) -> SipRequest:
    method = draw(tokens)
    return SipRequest(
        method=method,
        uri=draw(uris),
        headers=draw(_headers(method)),
        body=draw(st.binary(max_size=64)),
    )


_reason = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=16).map(str.strip)


@st.composite
def responses(draw: st.DrawFn) -> SipResponse:
    return SipResponse(
        status=draw(st.integers(100, 699)),
        reason=draw(_reason),
        headers=draw(_headers(draw(tokens))),
        body=draw(st.binary(max_size=64)),
    )


messages = st.one_of(requests(), responses())
