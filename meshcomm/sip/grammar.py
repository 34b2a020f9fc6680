"""RFC 3261 §25 grammar pieces shared by the SIP message layer.

Everything here is pure and fast: precompiled regular expressions, frozen lookup tables and
small helpers. Every size limit of the message layer is a named constant in this module.
Helpers that read untrusted text raise :class:`~meshcomm.errors.DecodeError` only.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from meshcomm.errors import DecodeError, LocalProtocolError

# ---------------------------------------------------------------------------- size limits
MAX_MESSAGE_BYTES: Final = 65535
"""Largest datagram we parse (the UDP maximum; RFC 3261 §18.1.1 keeps real ones far below)."""
MAX_HEADERS: Final = 256
"""Most header lines (after unfolding) one message may carry."""
MAX_LINE_BYTES: Final = 8192
"""Longest physical line (start line or one header line before unfolding)."""
MAX_URI_BYTES: Final = 4096
"""Longest URI text parse_uri_untrusted accepts."""
MAX_URI_PARAMS: Final = 64
"""Most ;parameters in one URI, Via or name-addr."""
MAX_URI_HEADERS: Final = 32
"""Most ?headers in one URI."""
MAX_LIST_ELEMENTS: Final = 256
"""Most comma-separated elements read from all lines of one header name."""
MAX_CSEQ_DIGITS: Final = 32
"""CSeq numbers longer than this are rejected outright (shorter out-of-range ones are flagged)."""
MAX_PORT: Final = 65535
MAX_CSEQ_NUMBER: Final = 2**31 - 1
"""RFC 3261 §8.1.1.5: a CSeq number is less than 2**31."""
MAX_DELTA_SECONDS: Final = 2**32 - 1
"""RFC 3261 §25.1: delta-seconds beyond this are out of range."""
MAX_MAX_FORWARDS: Final = 255

# ---------------------------------------------------------------------------- characters
TOKEN_CHARS: Final = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN_RE: Final = re.compile(rf"[{TOKEN_CHARS}]+")
UNRESERVED: Final = "A-Za-z0-9\\-_.!~*'()"
_WORD_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+")
CALL_ID_RE: Final = re.compile(rf"{_WORD_RE.pattern}(?:@{_WORD_RE.pattern})?")

_HOSTNAME_RE: Final = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?\.)*[a-z](?:[a-z0-9\-]*[a-z0-9])?\.?"
)
_IPV4_RE: Final = re.compile(r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}")
_QUOTED_PAIR_RE: Final = re.compile(r"\\([\s\S])")
_NEEDS_QUOTE_ESCAPE_RE: Final = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')

# One element of a comma-separated header value: quoted strings, <...> and (...) are opaque.
_LIST_ELEMENT_RE: Final = re.compile(
    r'(?:"(?:[^"\\]|\\[\s\S])*+"|<[^<>]*>|\((?:[^()\\]|\\[\s\S])*+\)|[^,"<(])++'
)

# generic-param: ;name[=value] where value is a token, a host or a quoted string (§25.1)
PARAM_RE: Final = re.compile(
    rf'\s*;\s*([{TOKEN_CHARS}]+)(?:\s*=\s*("(?:[^"\\]|\\[\s\S])*+"|[^\s;,"<>()]+))?'
)


# ---------------------------------------------------------------------------- header names
COMPACT_FORMS: Final[dict[str, str]] = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact",
    "k": "Supported", "l": "Content-Length", "m": "Contact", "n": "Identity-Info",
    "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To", "u": "Allow-Events",
    "v": "Via", "x": "Session-Expires", "y": "Identity",
}  # fmt: skip
KNOWN_HEADER_NAMES: Final = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version",
    "Organization", "P-Asserted-Identity", "Path", "Priority", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To",
    "Referred-By", "Reject-Contact", "Reply-To", "Request-Disposition", "Require",
    "Retry-After", "Route", "RSeq", "Server", "Service-Route", "Session-Expires", "SIP-ETag",
    "SIP-If-Match", "Subject", "Subscription-State", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
)  # fmt: skip
_CANONICAL: Final[dict[str, str]] = {n.lower(): n for n in KNOWN_HEADER_NAMES}
_CANONICAL.update(COMPACT_FORMS)

LIST_HEADERS: Final = frozenset(
    n.lower()
    for n in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
        "Allow", "Allow-Events", "Call-Info", "Contact", "Content-Encoding",
        "Content-Language", "Error-Info", "In-Reply-To", "P-Asserted-Identity", "Path",
        "Proxy-Require", "Reason", "Record-Route", "Reject-Contact", "Require", "Route",
        "Service-Route", "Supported", "Unsupported", "Via", "Warning",
    )
)  # fmt: skip
"""Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1 and §20)."""


def canonical_header_name(name: str) -> str:
    """Long canonical form of a known or compact header name; unknown names unchanged."""
    return _CANONICAL.get(name.lower(), name)


def is_canonical_header_name(name: str) -> bool:
    """True when ``name`` is the canonical long form of a known header name."""
    return _CANONICAL.get(name.lower()) == name


def check_header_name(name: str) -> str:
    """Validate a header name given by local code and return its canonical form."""
    if TOKEN_RE.fullmatch(name) is None:
        raise LocalProtocolError(f"header name is not a token: {name!r}")
    return canonical_header_name(name)


def check_header_value(value: str) -> str:
    """Normalise a header value given by local code the way the parser stores values."""
    if "\r" in value or "\n" in value:
        raise LocalProtocolError("header value must not contain CR or LF")
    if value.isascii():  # the round trip below cannot change ASCII text
        return value.strip()
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape").strip()


# ---------------------------------------------------------------------------- lists
def split_commas(value: str) -> list[str]:
    """Split a header value at commas outside quotes, <...> and comments; keeps empty parts."""
    if '"' not in value and "<" not in value and "(" not in value:
        return [part.strip() for part in value.split(",")]
    if "," not in value:  # one element: the loop below would read it in one match
        if _LIST_ELEMENT_RE.fullmatch(value) is None:
            raise DecodeError(f"unbalanced quote or bracket in {value[:80]!r}")
        return [value.strip()]
    parts: list[str] = []
    pos, end = 0, len(value)
    match = _LIST_ELEMENT_RE.match
    while True:
        m = match(value, pos)
        if m is not None:
            parts.append(m.group().strip())
            pos = m.end()
        else:
            parts.append("")
        if pos >= end:
            return parts
        if value[pos] != ",":
            raise DecodeError(f"unbalanced quote or bracket in {value[:80]!r}")
        pos += 1
        if len(parts) > MAX_LIST_ELEMENTS:
            raise DecodeError("too many list elements")


# ---------------------------------------------------------------------------- quoting
def unquote(quoted_body: str) -> str:
    """Undo quoted-pair escapes of the text between the quotes of a quoted-string."""
    return _QUOTED_PAIR_RE.sub(r"\1", quoted_body) if "\\" in quoted_body else quoted_body


def quote(text: str) -> str:
    """Make a quoted-string; raise LocalProtocolError for CR/LF, which cannot be quoted."""
    if "\r" in text or "\n" in text:
        raise LocalProtocolError("a quoted string cannot carry CR or LF")
    return '"' + _NEEDS_QUOTE_ESCAPE_RE.sub(lambda m: "\\" + m.group(), text) + '"'


# ---------------------------------------------------------------------------- %-escapes
_HEX = "0123456789ABCDEF"


def _allowed_table(extra: str) -> frozenset[int]:
    alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return frozenset((alnum + "-_.!~*'()" + extra).encode())


USER_SAFE: Final = _allowed_table("&=+$,;?/")
PASSWORD_SAFE: Final = _allowed_table("&=+$,")
PARAM_SAFE: Final = _allowed_table("[]/:&+$")
HEADER_SAFE: Final = _allowed_table("[]/?:+$")


def escape(text: str, safe: frozenset[int]) -> str:
    """%-escape every octet of the UTF-8 form of ``text`` outside ``safe``."""
    raw = text.encode("utf-8", "surrogateescape")
    if all(b in safe for b in raw):
        return text
    return "".join(chr(b) if b in safe else "%" + _HEX[b >> 4] + _HEX[b & 15] for b in raw)


def unescape(text: str) -> str:
    """Undo %-escapes (invalid escapes were rejected by the caller's grammar check)."""
    if "%" not in text:
        return text
    raw = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        j = raw.find(b"%", i)
        if j < 0:
            out += raw[i:]
            break
        out += raw[i:j]
        out.append(int(raw[j + 1 : j + 3], 16))
        i = j + 3
    return out.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------- hosts
HOST_CACHE_ENTRIES: Final = 4096
"""Validated host strings remembered (hosts recur in every message of a dialog)."""
_host_cache: dict[str, str] = {}


def parse_host(text: str) -> str:
    """Validate a host (hostname, IPv4address or IPv6reference) and return it lowercased."""
    host = _host_cache.get(text)
    if host is None:
        host = _validate_host(text)
        if len(_host_cache) >= HOST_CACHE_ENTRIES:
            _host_cache.clear()
        _host_cache[text] = host
    return host


# Two common IPv6 shapes that are certainly valid (8 groups; or "::" with at most 6 explicit
# groups); anything else, e.g. an embedded IPv4 tail, is left to the ipaddress module.
_IPV6_FULL_RE: Final = re.compile(r"[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){7}")
_IPV6_COMPRESSED_RE: Final = re.compile(
    r"((?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,5})?)::((?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,5})?)"
)


def _is_plain_ipv6(address: str) -> bool:
    """True for the common IPv6 forms above (lowercase); False means "ask ipaddress"."""
    if _IPV6_FULL_RE.fullmatch(address) is not None:
        return True
    m = _IPV6_COMPRESSED_RE.fullmatch(address)
    if m is None:
        return False
    left, right = m.groups()
    groups = (left.count(":") + 1 if left else 0) + (right.count(":") + 1 if right else 0)
    return groups <= 6


def _validate_host(text: str) -> str:
    host = text.lower()
    if host.startswith("["):
        if not host.endswith("]"):
            raise DecodeError(f"bad IPv6 reference {text[:60]!r}")
        if _is_plain_ipv6(host[1:-1]):
            return host
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise DecodeError(f"bad IPv6 reference {text[:60]!r}") from None
        return host
    if _IPV4_RE.fullmatch(host):
        if any(int(octet) > 255 for octet in host.split(".")):
            raise DecodeError(f"bad IPv4 address {text!r}")
        return host
    if len(host) > 255 or _HOSTNAME_RE.fullmatch(host) is None:
        raise DecodeError(f"bad host name {text[:60]!r}")
    return host


def is_number(text: str, max_digits: int = 10) -> bool:
    """``1*DIGIT`` in ASCII of at most ``max_digits`` digits (``str.isdigit`` alone also
    accepts digits ``int()`` refuses, such as superscripts)."""
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def bounded_number(text: str | None, maximum: int) -> int | None:
    """``text`` as an int when it is a plain number in ``0..maximum``, else None."""
    if text is None or not is_number(text, len(str(maximum))):
        return None
    value = int(text)
    return value if value <= maximum else None


def parse_port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > MAX_PORT:
        raise DecodeError(f"bad port {text[:10]!r}")
    return int(text)


SIMPLE_PARAMS: Final = rf'(?:;[{TOKEN_CHARS}]+(?:=[^\s;,"<>()]+)?)*'
"""Pattern text of the usual ``*(SEMI generic-param)``: no whitespace, no quoted values.
PARAM_RE reads such text the same way split_simple_params does."""


def split_simple_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """``;a=1;b`` -> ``(("a", "1"), ("b", None))``, names lowercased; ``""`` -> ``()``.
    Only for text a pattern has already checked (no empty items, no ';' inside values);
    DecodeError for more than MAX_URI_PARAMS parameters."""
    if not text:
        return ()
    if text.count(";") > MAX_URI_PARAMS:
        raise DecodeError("too many parameters")
    if text.find(";", 1) < 0:
        name, eq, value = text[1:].partition("=")
        return ((name.lower(), value if eq else None),)
    out: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        out.append((name.lower(), value if eq else None))
    return tuple(out)


def parse_generic_params(text: str, start: int) -> tuple[tuple[tuple[str, str | None], ...], int]:
    """Read ``*( SEMI generic-param )`` from ``text[start:]``; names are lowercased.

    Returns the parameters and the index just after the last one read.
    """
    if text.find(";", start) < 0:
        return (), start
    params: list[tuple[str, str | None]] = []
    match = PARAM_RE.match
    pos = start
    while True:
        m = match(text, pos)
        if m is None:
            return tuple(params), pos
        params.append((m.group(1).lower(), m.group(2)))
        pos = m.end()
        if len(params) > MAX_URI_PARAMS:
            raise DecodeError("too many parameters")


def format_params(params: tuple[tuple[str, str | None], ...]) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def param_lookup(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    key = name.lower()
    for n, v in params:
        if n == key:
            return v
    return None


def param_present(params: tuple[tuple[str, str | None], ...], name: str) -> bool:
    key = name.lower()
    return any(n == key for n, _ in params)


def replace_params(
    params: tuple[tuple[str, str | None], ...], updates: dict[str, str | None]
) -> tuple[tuple[str, str | None], ...]:
    """Set (in place, keeping order) or append each of ``updates``; names are lowercased."""
    lowered = {k.lower(): v for k, v in updates.items()}
    out = [(n, lowered.pop(n)) if n in lowered else (n, v) for n, v in params]
    out.extend(lowered.items())
    return tuple(out)
