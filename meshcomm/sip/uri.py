"""SIP, SIPS and other URIs (RFC 3261 §19.1, §25.1; IPv6 references per RFC 5118).

``parse_uri_untrusted`` reads a URI as it appears in a Request-Line or inside ``<...>``;
``str(uri)`` gives the canonical form (lowercased scheme and host, %-escapes only where the
grammar needs them), and ``parse_uri_untrusted(str(u)) == u`` for every valid ``SipUri``.
Schemes other than sip/sips are kept opaque: ``SipUri(scheme="tel", opaque="+1-555")``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.sip import grammar as g

_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
_ESC = r"%[0-9A-Fa-f]{2}"
_USER_RE: Final = re.compile(rf"(?:[{g.UNRESERVED}&=+$,;?/]|{_ESC})+")
_PASSWORD_RE: Final = re.compile(rf"(?:[{g.UNRESERVED}&=+$,]|{_ESC})*")
_PCHARS_RE: Final = re.compile(rf"(?:[{g.UNRESERVED}\[\]/:&+$]|{_ESC})+")
_HCHARS_RE: Final = re.compile(rf"(?:[{g.UNRESERVED}\[\]/?:+$]|{_ESC})*")
_HOSTPORT_RE: Final = re.compile(r"(\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9\-.]+)(?::([0-9]*))?")
# Opaque URIs of other schemes: printable, no whitespace, no characters that end a URI.
_OPAQUE_RE: Final = re.compile(r"[^\x00-\x20\x7f<>\"\\]+")

SIP_SCHEMES: Final = frozenset({"sip", "sips"})


@dataclass(frozen=True, slots=True)
class SipUri:
    """A parsed URI. For sip/sips, ``opaque`` is None; for other schemes only it is set."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    opaque: str | None = None

    def param(self, name: str) -> str | None:
        """Value of URI parameter ``name``; None if absent or valueless."""
        return g.param_lookup(self.params, name)

    def has_param(self, name: str) -> bool:
        return g.param_present(self.params, name)

    def with_params(self, **params: str | None) -> SipUri:
        """Copy with each parameter set (order kept) or appended; None makes it valueless."""
        return replace(self, params=g.replace_params(self.params, params))

    @property
    def is_sip(self) -> bool:
        return self.opaque is None and self.scheme in SIP_SCHEMES

    @property
    def aor(self) -> str:
        """``scheme:user@host`` without port, parameters or headers (an address-of-record)."""
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        user = "" if self.user is None else g.escape(self.user, g.USER_SAFE) + "@"
        return f"{self.scheme}:{user}{self.host}"

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(g.escape(self.user, g.USER_SAFE))
            if self.password is not None:
                parts += (":", g.escape(self.password, g.PASSWORD_SAFE))
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += (":", str(self.port))
        for name, value in self.params:
            parts += (";", g.escape(name, g.PARAM_SAFE))
            if value is not None:
                parts += ("=", g.escape(value, g.PARAM_SAFE))
        for i, (name, value) in enumerate(self.headers):
            parts += ("&" if i else "?", g.escape(name, g.HEADER_SAFE), "=")
            parts.append(g.escape(value, g.HEADER_SAFE))
        return "".join(parts)


def make_sip_uri(
    user: str | None, host: str, port: int | None = None, *, scheme: str = "sip"
) -> SipUri:
    """Build a sip/sips URI from local values, validating them (LocalProtocolError)."""
    try:
        host_norm = g.parse_host(host)
    except DecodeError as exc:
        raise LocalProtocolError(str(exc)) from None
    if scheme not in SIP_SCHEMES or (port is not None and not 0 <= port <= g.MAX_PORT):
        raise LocalProtocolError(f"bad scheme or port: {scheme!r} {port!r}")
    if user == "":
        raise LocalProtocolError("user part must be None or non-empty")
    return SipUri(scheme=scheme, user=user, host=host_norm, port=port)


def parse_uri_untrusted(text: str) -> SipUri:
    """Parse one URI (no surrounding ``<>`` and no whitespace). Raises DecodeError only."""
    if not isinstance(text, str):
        raise DecodeError("URI must be text")
    if len(text) > g.MAX_URI_BYTES:
        raise DecodeError("URI too long")
    if text.startswith("sip:"):  # the usual case; the same result as the general route
        return _parse_sip("sip", text[4:])
    m = _SCHEME_RE.match(text)
    if m is None:
        raise DecodeError(f"URI without scheme: {text[:60]!r}", status_hint=400)
    scheme = m.group(1).lower()
    rest = text[m.end() :]
    if scheme not in SIP_SCHEMES:
        if _OPAQUE_RE.fullmatch(rest) is None:
            raise DecodeError(f"bad {scheme} URI: {text[:60]!r}")
        return SipUri(scheme=scheme, opaque=rest)
    return _parse_sip(scheme, rest)


# Fast path for the usual shapes: [user@]host[:port][;params] without %-escapes, without a
# password and without ?headers. Anything else takes the general path below, which gives
# the same result for what this pattern accepts. Four groups: user, host, port, params.
SIMPLE_SIP_PATTERN: Final = (
    rf"(?:([{g.UNRESERVED}&=+$,;?/]+)@)?"
    r"(\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?"
    rf"((?:;[{g.UNRESERVED}\[\]/:&+$]+(?:=[{g.UNRESERVED}\[\]/:&+$]+)?)*)"
)
_SIMPLE_SIP_RE: Final = re.compile(SIMPLE_SIP_PATTERN)
_new = object.__new__
_set_scheme = SipUri.__dict__["scheme"].__set__
_set_user = SipUri.__dict__["user"].__set__
_set_password = SipUri.__dict__["password"].__set__
_set_host = SipUri.__dict__["host"].__set__
_set_port = SipUri.__dict__["port"].__set__
_set_params = SipUri.__dict__["params"].__set__
_set_headers = SipUri.__dict__["headers"].__set__
_set_opaque = SipUri.__dict__["opaque"].__set__


def simple_sip_uri_untrusted(
    scheme: str, user: str | None, host_text: str, port_text: str | None, param_text: str
) -> SipUri:
    """The URI of one match of SIMPLE_SIP_PATTERN (its four groups), built without the
    frozen dataclass's per-field ``object.__setattr__`` calls. The caller has checked the
    URI length (MAX_URI_BYTES); ``scheme`` is "sip" or "sips"."""
    uri: SipUri = _new(SipUri)
    _set_scheme(uri, scheme)
    _set_user(uri, user)
    _set_password(uri, None)
    _set_host(uri, g.parse_host(host_text))
    _set_port(uri, None if port_text is None else g.parse_port(port_text))
    _set_params(uri, g.split_simple_params(param_text))
    _set_headers(uri, ())
    _set_opaque(uri, None)
    return uri


def _parse_sip(scheme: str, rest: str) -> SipUri:
    m = _SIMPLE_SIP_RE.fullmatch(rest)
    if m is None:
        return _parse_sip_general(scheme, rest)
    return simple_sip_uri_untrusted(scheme, *m.groups())


def _parse_sip_general(scheme: str, rest: str) -> SipUri:
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        colon = userinfo.find(":")
        raw_user = userinfo if colon < 0 else userinfo[:colon]
        if _USER_RE.fullmatch(raw_user) is None:
            raise DecodeError(f"bad user part {raw_user[:60]!r}")
        user = g.unescape(raw_user)
        if colon >= 0:
            raw_pw = userinfo[colon + 1 :]
            if _PASSWORD_RE.fullmatch(raw_pw) is None:
                raise DecodeError("bad password part")
            password = g.unescape(raw_pw)
    hp = _HOSTPORT_RE.match(rest)
    if hp is None:
        raise DecodeError(f"bad host in URI {rest[:60]!r}")
    host = g.parse_host(hp.group(1))
    port = None if hp.group(2) is None else g.parse_port(hp.group(2))
    rest = rest[hp.end() :]
    headers_text = None
    q = rest.find("?")
    if q >= 0:
        rest, headers_text = rest[:q], rest[q + 1 :]
    params = _parse_uri_params(rest) if rest else ()
    headers = _parse_uri_headers(headers_text) if headers_text is not None else ()
    return SipUri(scheme, user, password, host, port, params, headers)


def _parse_uri_params(text: str) -> tuple[tuple[str, str | None], ...]:
    if text[0] != ";":
        raise DecodeError(f"junk after host in URI: {text[:40]!r}")
    items = text[1:].split(";")
    if len(items) > g.MAX_URI_PARAMS:
        raise DecodeError("too many URI parameters")
    params: list[tuple[str, str | None]] = []
    for item in items:
        name, eq, value = item.partition("=")
        if _PCHARS_RE.fullmatch(name) is None or (eq and _PCHARS_RE.fullmatch(value) is None):
            raise DecodeError(f"bad URI parameter {item[:40]!r}")
        params.append((g.unescape(name).lower(), g.unescape(value) if eq else None))
    return tuple(params)


def _parse_uri_headers(text: str) -> tuple[tuple[str, str], ...]:
    items = text.split("&")
    if len(items) > g.MAX_URI_HEADERS:
        raise DecodeError("too many URI headers")
    headers: list[tuple[str, str]] = []
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name or _HCHARS_RE.fullmatch(name) is None:
            raise DecodeError(f"bad URI header {item[:40]!r}")
        if _HCHARS_RE.fullmatch(value) is None:
            raise DecodeError(f"bad URI header value {item[:40]!r}")
        headers.append((g.unescape(name), g.unescape(value)))
    return tuple(headers)
