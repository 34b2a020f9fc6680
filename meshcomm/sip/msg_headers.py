"""Typed SIP header values: name-addr (From/To/Contact/Route), Via and CSeq (RFC 3261 §20, §25).

Each type has an ``_untrusted`` parser that raises DecodeError only and a ``__str__`` that
gives a canonical form the parser reads back equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.sip import grammar as g
from meshcomm.sip.uri import (
    SIMPLE_SIP_PATTERN,
    SipUri,
    parse_uri_untrusted,
    simple_sip_uri_untrusted,
)

# display-name = *(token LWS) / quoted-string ; then LAQUOT addr-spec RAQUOT
_NAME_ADDR_RE: Final = re.compile(  # atomic/possessive parts: linear time on any input
    rf'\s*(?:"((?:[^"\\]|\\[\s\S])*+)"\s*|((?>[{g.TOKEN_CHARS}]+(?:\s+[{g.TOKEN_CHARS}]+)*+)\s*)?)'
    r"<([^<>\s]*+)>"
)
_TOKEN_WORDS_RE: Final = re.compile(rf"[{g.TOKEN_CHARS}]+(?:\s+[{g.TOKEN_CHARS}]+)*")
# addr-spec without brackets: the URI ends at the first ';' (RFC 3261 §20.10), and may not
# contain ',', '?' or ';'.
_ADDR_SPEC_RE: Final = re.compile(r'\s*([^\s;,?<>"]+)')
_VIA_RE: Final = re.compile(
    rf"\s*SIP\s*/\s*2\.0\s*/\s*([{g.TOKEN_CHARS}]+)\s+"
    r"(\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9\-.]+)(?:\s*:\s*([0-9]+))?"
)
_COMMENT_RE: Final = re.compile(r"\s*\((?:[^()\\]|\\[\s\S]|\((?:[^()\\]|\\[\s\S])*\))*\)\s*")
_CSEQ_RE: Final = re.compile(rf"\s*([0-9]+)\s+([{g.TOKEN_CHARS}]+)\s*")
BRANCH_MAGIC_COOKIE: Final = "z9hG4bK"

FAST_PATH_MAX_CHARS: Final = 1024
"""Longer header values take the general parsers (which enforce the URI and count limits)."""
# The usual name-addr in one match: an optional display name (quoted without escapes, or
# tokens), a sip/sips URI of the simple shape, simple header parameters. Groups: quoted,
# tokens, scheme, user, host, port, URI params, header params. The general parser reads
# everything this accepts to the same value.
_FAST_NAME_ADDR_RE: Final = re.compile(
    rf'(?:"([^"\\]*)"\s*|([{g.TOKEN_CHARS}]+(?:\s+[{g.TOKEN_CHARS}]+)*)\s*)?'
    rf"<(sips?):{SIMPLE_SIP_PATTERN}>({g.SIMPLE_PARAMS})"
)
# One via-parm of the usual shape. Groups: transport, host, port, params.
_FAST_VIA_RE: Final = re.compile(
    rf"SIP/2\.0/([{g.TOKEN_CHARS}]+) (\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9\-.]+)(?::([0-9]{{1,5}}))?"
    rf"({g.SIMPLE_PARAMS})"
)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route/Record-Route value. ``params`` are the header parameters
    (tag, expires, q, lr-outside-brackets...), not the URI's; names lowercased, values raw
    (a quoted value keeps its quotes)."""

    uri: SipUri
    display_name: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def tag(self) -> str | None:
        return g.param_lookup(self.params, "tag")

    def param(self, name: str) -> str | None:
        return g.param_lookup(self.params, name)

    def has_param(self, name: str) -> bool:
        return g.param_present(self.params, name)

    def with_params(self, **params: str | None) -> NameAddr:
        return replace(self, params=g.replace_params(self.params, params))

    def __str__(self) -> str:
        display = "" if self.display_name is None else g.quote(self.display_name) + " "
        return f"{display}<{self.uri}>{g.format_params(self.params)}"


def parse_name_addr_untrusted(text: str) -> NameAddr:
    """Parse ``name-addr`` or ``addr-spec`` followed by ``*(SEMI generic-param)``."""
    if not isinstance(text, str) or len(text) > g.MAX_LINE_BYTES:
        raise DecodeError("name-addr too long or not text")
    if len(text) <= FAST_PATH_MAX_CHARS:
        f = _FAST_NAME_ADDR_RE.fullmatch(text)
        if f is not None:
            return _name_addr_of_fast_match(f)
    m = _NAME_ADDR_RE.match(text)
    display: str | None
    if m is not None:
        quoted, tokens, uri_text = m.group(1, 2, 3)
        if quoted is not None:
            display = g.unquote(quoted)
        else:
            words = (tokens or "").strip()
            display = words if words else None
            if words and _TOKEN_WORDS_RE.fullmatch(words) is None:
                raise DecodeError(f"bad display name {words[:40]!r}")
        end = m.end()
    else:
        s = _ADDR_SPEC_RE.match(text)
        if s is None:
            raise DecodeError(f"bad name-addr {text[:60]!r}")
        display, uri_text, end = None, s.group(1), s.end()
    uri = parse_uri_untrusted(uri_text)
    params, end = g.parse_generic_params(text, end)
    if text[end:].strip():
        raise DecodeError(f"junk after name-addr: {text[end : end + 40]!r}")
    return NameAddr(uri, display, params)


def _name_addr_of_fast_match(f: re.Match[str]) -> NameAddr:
    quoted, tokens, scheme, user, host, port, uri_params, params_text = f.groups()
    addr: NameAddr = _new(NameAddr)
    _set_na_uri(addr, simple_sip_uri_untrusted(scheme, user, host, port, uri_params))
    _set_na_display(addr, quoted if quoted is not None else tokens)
    _set_na_params(addr, g.split_simple_params(params_text))
    return addr


@dataclass(frozen=True, slots=True)
class Via:
    """One via-parm. ``host`` is lowercased (IPv6 with brackets); ``transport`` uppercased."""

    transport: str
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    def param(self, name: str) -> str | None:
        return g.param_lookup(self.params, name)

    def has_param(self, name: str) -> bool:
        return g.param_present(self.params, name)

    def with_params(self, **params: str | None) -> Via:
        return replace(self, params=g.replace_params(self.params, params))

    @property
    def branch(self) -> str | None:
        return g.param_lookup(self.params, "branch")

    @property
    def received(self) -> str | None:
        """The received parameter, without the brackets some senders put around IPv6."""
        value = g.param_lookup(self.params, "received")
        if value is not None and value.startswith("[") and value.endswith("]"):
            return value[1:-1]
        return value

    @property
    def has_rport(self) -> bool:
        return g.param_present(self.params, "rport")

    @property
    def rport(self) -> int | None:
        value = g.param_lookup(self.params, "rport")
        return None if value is None else int(value)

    @property
    def maddr(self) -> str | None:
        return g.param_lookup(self.params, "maddr")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def has_rfc3261_branch(self) -> bool:
        """True when the branch carries the RFC 3261 magic cookie (§8.1.1.7)."""
        branch = self.branch
        return branch is not None and branch.startswith(BRANCH_MAGIC_COOKIE)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"SIP/2.0/{self.transport} {self.host}{port}{g.format_params(self.params)}"


def parse_via_untrusted(text: str) -> Via:
    """Parse one via-parm (one comma-separated element of a Via header)."""
    if len(text) <= FAST_PATH_MAX_CHARS:
        f = _FAST_VIA_RE.fullmatch(text)
        if f is not None:
            return _via_of_fast_match(f)
    m = _VIA_RE.match(text)
    if m is None:
        raise DecodeError(f"bad Via {text[:60]!r}")
    host = g.parse_host(m.group(2))
    port = None if m.group(3) is None else g.parse_port(m.group(3))
    params, end = g.parse_generic_params(text, m.end())
    rest = text[end:]
    if rest.strip() and _COMMENT_RE.fullmatch(rest) is None:
        raise DecodeError(f"junk in Via: {rest[:40]!r}")
    _check_via_params(params)
    return _make_via(m.group(1).upper(), host, port, params)


def _via_of_fast_match(f: re.Match[str]) -> Via:
    transport, host_text, port_text, params_text = f.groups()
    port = None if port_text is None else g.parse_port(port_text)
    params = g.split_simple_params(params_text)
    _check_via_params(params)
    return _make_via(transport.upper(), g.parse_host(host_text), port, params)


def _make_via(
    transport: str, host: str, port: int | None, params: tuple[tuple[str, str | None], ...]
) -> Via:
    """``Via(transport, host, port, params)`` for checked parts, without the frozen
    dataclass's per-field ``object.__setattr__`` calls."""
    via: Via = _new(Via)
    _set_via_transport(via, transport)
    _set_via_host(via, host)
    _set_via_port(via, port)
    _set_via_params(via, params)
    return via


def _check_via_params(params: tuple[tuple[str, str | None], ...]) -> None:
    for name, value in params:
        if (
            name == "rport"
            and value is not None
            and (not value.isdigit() or not value.isascii() or int(value) > g.MAX_PORT)
        ):
            raise DecodeError("bad rport")
        if name in ("branch", "received", "maddr", "ttl") and value is None:
            raise DecodeError(f"Via {name} without value")


_new = object.__new__
_set_na_uri = NameAddr.__dict__["uri"].__set__
_set_na_display = NameAddr.__dict__["display_name"].__set__
_set_na_params = NameAddr.__dict__["params"].__set__
_set_via_transport = Via.__dict__["transport"].__set__
_set_via_host = Via.__dict__["host"].__set__
_set_via_port = Via.__dict__["port"].__set__
_set_via_params = Via.__dict__["params"].__set__


def parse_vias_untrusted(values: list[str]) -> tuple[Via, ...]:
    """All via-parms of all Via header lines, top first."""
    vias: list[Via] = []
    for value in values:
        if "," not in value and len(value) <= FAST_PATH_MAX_CHARS:
            f = _FAST_VIA_RE.fullmatch(value)
            if f is not None:  # one element (split_commas would return [value])
                vias.append(_via_of_fast_match(f))
                continue
        for element in g.split_commas(value):
            if not element:
                raise DecodeError("empty Via element")
            vias.append(parse_via_untrusted(element))
    if not vias:
        raise DecodeError("no Via")
    return tuple(vias)


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq_untrusted(text: str) -> CSeq:
    """Parse ``1*DIGIT LWS Method``; a number of 2**31 or more is a DecodeError (400)."""
    m = _CSEQ_RE.fullmatch(text)
    if m is None or len(m.group(1)) > g.MAX_CSEQ_DIGITS:
        raise DecodeError(f"bad CSeq {text[:40]!r}")
    number, method = m.groups()
    if int(number) > g.MAX_CSEQ_NUMBER:  # RFC 3261 §8.1.1.5: less than 2**31
        raise DecodeError(f"CSeq {number[:20]} out of range", status_hint=400, reason="range")
    cseq: CSeq = _new(CSeq)
    _set_cseq_number(cseq, int(number))
    _set_cseq_method(cseq, method)
    return cseq


_set_cseq_number = CSeq.__dict__["number"].__set__
_set_cseq_method = CSeq.__dict__["method"].__set__


def parse_name_addr_list_untrusted(values: list[str]) -> tuple[NameAddr, ...]:
    """Contact/Route/Record-Route: every element of every header line, in order."""
    out: list[NameAddr] = []
    for value in values:
        if "," not in value and len(value) <= FAST_PATH_MAX_CHARS:
            f = _FAST_NAME_ADDR_RE.fullmatch(value)
            if f is not None:  # one element (split_commas would return [value])
                out.append(_name_addr_of_fast_match(f))
                continue
        for element in g.split_commas(value):
            if not element:
                raise DecodeError("empty element in address list")
            out.append(parse_name_addr_untrusted(element))
    return tuple(out)
