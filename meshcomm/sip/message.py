"""SIP requests and responses: parser, serializer, typed access (RFC 3261 §7, §18.3, §20).

``parse_message_untrusted(datagram)`` returns a :class:`SipRequest` or :class:`SipResponse`
or raises :class:`~meshcomm.errors.DecodeError` (carrying a SIP status hint) and nothing else.

Stored form (so that ``parse_message_untrusted(m.serialize()) == m`` for every message):

* ``headers`` holds one ``(name, value)`` per header line, in order; names are the canonical
  long form for known and compact names (``v`` -> ``Via``), unknown names as received;
  values are unfolded (each fold becomes one SP) and stripped.
* ``Content-Length`` is always present exactly once and equal to ``len(body)``; a datagram
  without one gets it appended (RFC 3261 §18.3: the body is then the rest of the datagram).

Parse-time checks: the start line, Content-Length framing and the mandatory headers (Via,
Call-ID, CSeq, From, To) must be well formed, else DecodeError; so the typed accessors of
those cannot fail on a parsed message. Findings that leave the message usable but wrong
(RFC 4475 §3.1.2 cases a server "may" accept) are listed in ``defects``; a UA answers a
request with defects with 400 (or 501 for an unknown method) instead of processing it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import Final, Self, cast

from meshcomm.errors import DecodeError, LocalProtocolError
from meshcomm.sip import grammar as g
from meshcomm.sip.msg_headers import (
    CSeq,
    NameAddr,
    Via,
    parse_cseq_untrusted,
    parse_name_addr_list_untrusted,
    parse_name_addr_untrusted,
    parse_via_untrusted,
    parse_vias_untrusted,
)
from meshcomm.sip.uri import (
    SIMPLE_SIP_PATTERN,
    SipUri,
    parse_uri_untrusted,
    simple_sip_uri_untrusted,
)

__all__ = [
    "CSeq",
    "NameAddr",
    "SipRequest",
    "SipResponse",
    "Via",
    "parse_message_untrusted",
    "parse_name_addr_untrusted",
    "parse_via_untrusted",
]

log = logging.getLogger(__name__)

MAX_PHYSICAL_LINES: Final = 1024
"""Most CRLF-separated lines in a header section (folded continuation lines included)."""

_REQUEST_LINE_RE: Final = re.compile(
    rf"([{g.TOKEN_CHARS}]+) ([^\x00-\x20\x7f]+) SIP/([0-9]+\.[0-9]+)"
)
# The usual Request-Line in one match (a sip/sips URI of the simple shape, SIP/2.0); groups:
# method, scheme, then those of SIMPLE_SIP_PATTERN. _request_line's general route reads
# every line this accepts to the same method and URI.
_FAST_REQUEST_LINE_RE: Final = re.compile(
    rf"([{g.TOKEN_CHARS}]+) (sips?):{SIMPLE_SIP_PATTERN} SIP/2\.0"
)
FAST_REQUEST_LINE_MAX_CHARS: Final = 1024
"""Longer Request-Lines take the general route (which enforces MAX_URI_BYTES)."""
_STATUS_LINE_RE: Final = re.compile(r"SIP/([0-9]+\.[0-9]+) ([0-9]{3}) ([^\x00-\x08\x0a-\x1f\x7f]*)")
_DATE_RE: Final = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_REASON_BAD_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# lowercased received name -> (canonical name, index key)
_NAME_TABLE: Final[dict[str, tuple[str, str]]] = {}


def _name_entry(name: str) -> tuple[str, str] | None:
    low = name.lower()
    entry = _NAME_TABLE.get(low)
    if entry is None:
        canon = g.canonical_header_name(name)
        if canon is name and g.TOKEN_RE.fullmatch(name) is None:
            return None
        entry = (canon, canon.lower())
        if canon is not name:  # only known names are cached (bounded table)
            _NAME_TABLE[low] = entry
    return entry


for _n in list(g.COMPACT_FORMS) + list(g.LIST_HEADERS) + ["call-id", "cseq", "from", "to"]:
    _name_entry(_n)
_name_entry("content-length")
_name_entry("max-forwards")
# Known names spelled exactly as canonical or compact (what real traffic sends) -> entry:
# spares a lower() per header line; any other spelling goes through _NAME_TABLE.
_EXACT_NAMES: Final[dict[str, tuple[str, str]]] = {}
for _n in g.KNOWN_HEADER_NAMES + tuple(g.COMPACT_FORMS):
    _EXACT_NAMES[_n] = cast(tuple[str, str], _name_entry(_n))

# Defect codes (stable strings: the UA and the torture table key on them).
DEFECT_CSEQ_METHOD: Final = "cseq-method-mismatch"
DEFECT_DUPLICATE: Final = "duplicate-header"
DEFECT_BRANCH_COOKIE_ONLY: Final = "branch-cookie-only"
DEFECT_RURI_HEADERS: Final = "request-uri-has-headers"
DEFECT_MAX_FORWARDS: Final = "max-forwards-invalid"
DEFECT_EXPIRES: Final = "expires-invalid"
DEFECT_DATE: Final = "date-invalid"
DEFECT_CONTACT: Final = "contact-invalid"


class _MessageAccess:
    """Typed access shared by SipRequest and SipResponse (fields come from the dataclass)."""

    __slots__ = ()
    headers: tuple[tuple[str, str], ...]
    body: bytes
    defects: tuple[str, ...]
    _cache: dict[str, object]

    # ------------------------------------------------------------------ raw headers
    def _index(self) -> dict[str, list[str]]:
        idx = self._cache.get("idx")
        if idx is None:
            built: dict[str, list[str]] = {}
            for name, value in self.headers:
                built.setdefault(name.lower(), []).append(value)
            self._cache["idx"] = idx = built
        return cast(dict[str, list[str]], idx)

    def _values(self, name: str) -> list[str]:
        return self._index().get(g.canonical_header_name(name).lower(), [])

    def header(self, name: str) -> str:
        """First value of ``name`` (any case or compact form); DecodeError(400) if missing."""
        values = self._values(name)
        if not values:
            raise DecodeError(f"missing {g.canonical_header_name(name)} header", status_hint=400)
        return values[0]

    def get_header(self, name: str) -> str | None:
        values = self._values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """All values of ``name``; comma-split where the RFC defines a list, empty parts dropped."""
        values = self._values(name)
        if g.canonical_header_name(name).lower() not in g.LIST_HEADERS:
            return list(values)
        return [part for value in values for part in g.split_commas(value) if part]

    # ------------------------------------------------------------------ typed headers
    @property
    def vias(self) -> tuple[Via, ...]:
        vias = self._cache.get("vias")
        if vias is None:
            self._cache["vias"] = vias = parse_vias_untrusted(self._values("Via"))
        return cast(tuple[Via, ...], vias)

    @property
    def top_via(self) -> Via:
        return self.vias[0]

    @property
    def call_id(self) -> str:
        value = self.header("Call-ID")
        if g.CALL_ID_RE.fullmatch(value) is None:
            raise DecodeError(f"bad Call-ID {value[:60]!r}")
        return value

    @property
    def cseq(self) -> CSeq:
        cseq = self._cache.get("cseq")
        if cseq is None:
            self._cache["cseq"] = cseq = parse_cseq_untrusted(self.header("CSeq"))
        return cast(CSeq, cseq)

    @property
    def from_addr(self) -> NameAddr:
        addr = self._cache.get("from")
        if addr is None:
            self._cache["from"] = addr = parse_name_addr_untrusted(self.header("From"))
        return cast(NameAddr, addr)

    @property
    def to_addr(self) -> NameAddr:
        addr = self._cache.get("to")
        if addr is None:
            self._cache["to"] = addr = parse_name_addr_untrusted(self.header("To"))
        return cast(NameAddr, addr)

    @property
    def is_contact_star(self) -> bool:
        """True for ``Contact: *`` (REGISTER removing all bindings, RFC 3261 §10.2.2)."""
        values = self._values("Contact")
        return len(values) == 1 and values[0] == "*"

    @property
    def contacts(self) -> tuple[NameAddr, ...]:
        """Every Contact element in order; ``()`` when absent or for ``Contact: *``."""
        if self.is_contact_star:
            return ()
        found = self._cache.get("contacts")
        if found is None:
            found = parse_name_addr_list_untrusted(self._values("Contact"))
            self._cache["contacts"] = found
        return cast(tuple[NameAddr, ...], found)

    @property
    def record_routes(self) -> tuple[NameAddr, ...]:
        return parse_name_addr_list_untrusted(self._values("Record-Route"))

    @property
    def routes(self) -> tuple[NameAddr, ...]:
        return parse_name_addr_list_untrusted(self._values("Route"))

    @property
    def max_forwards(self) -> int | None:
        return _optional_int(self.get_header("Max-Forwards"), g.MAX_MAX_FORWARDS, "Max-Forwards")

    @property
    def expires(self) -> int | None:
        return _optional_int(self.get_header("Expires"), g.MAX_DELTA_SECONDS, "Expires")

    @property
    def content_type(self) -> str | None:
        return self.get_header("Content-Type")

    # ------------------------------------------------------------------ copies
    def _derive(
        self,
        headers: tuple[tuple[str, str], ...],
        body: bytes | None = None,
        *,
        length_ok: bool = False,
    ) -> Self:
        """Copy with ``headers`` (already normalised) and ``body``; ``length_ok`` says the
        headers hold exactly one Content-Length, equal to the body's size, so they need no
        fixing."""
        data = self.body if body is None else body
        if not length_ok or body is not None:
            headers = _fix_length(headers, len(data))
        return self._copy_with(headers, data, _derived_cache(self._cache))

    def _copy_with(
        self, headers: tuple[tuple[str, str], ...], body: bytes, cache: dict[str, object]
    ) -> Self:
        """Same start line and defects, these parts (built without re-validation)."""
        raise NotImplementedError  # pragma: no cover - overridden by both message classes

    def with_header(self, name: str, value: str) -> Self:
        """Copy with ``name: value`` appended (Content-Length is managed, not appended)."""
        canon = g.check_header_name(name)
        return self._derive(
            (*self.headers, (canon, g.check_header_value(value))),
            length_ok=canon != "Content-Length",
        )

    def with_headers_replaced(self, name: str, values: list[str]) -> Self:
        """Copy with every ``name`` header replaced by ``values``, placed where the first was
        (appended if there was none)."""
        canon = g.check_header_name(name)
        key = canon.lower()
        # Stored names of known headers are always their canonical spelling, so only
        # unknown names need the case-insensitive comparison.
        any_case = not g.is_canonical_header_name(canon)
        new = [(canon, g.check_header_value(v)) for v in values]
        out: list[tuple[str, str]] = []
        placed = False
        for item in self.headers:
            stored = item[0]
            if stored == canon or (any_case and stored.lower() == key):
                if not placed:
                    out.extend(new)
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.extend(new)
        return self._derive(tuple(out), length_ok=canon != "Content-Length")

    def without_header(self, name: str) -> Self:
        key = g.canonical_header_name(name).lower()
        return self._derive(
            tuple(item for item in self.headers if item[0].lower() != key),
            length_ok=key != "content-length",
        )

    def with_body(self, body: bytes, content_type: str | None = None) -> Self:
        """Copy with ``body``; sets Content-Type when given (removes it when None and the body
        is empty) and always sets Content-Length."""
        msg = self._derive(self.headers, bytes(body))
        if content_type is not None:
            return msg.with_headers_replaced("Content-Type", [content_type])
        if not body:
            return msg.without_header("Content-Type")
        return msg

    # ------------------------------------------------------------------ serializer
    def _start_line(self) -> str:
        raise NotImplementedError  # pragma: no cover

    def serialize(self) -> bytes:
        """Canonical wire form: CRLF line ends, ``Name: value``, correct Content-Length."""
        wire = self._cache.get("wire")
        if wire is None:
            start = self._cache.get("start")
            if start is None:
                start = self._start_line()
            # each (name, value) pair becomes "name: value"; the final "\r\n" item ends
            # the last header line and the header section.
            lines = [cast(str, start), *map(": ".join, self.headers), "\r\n"]
            head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
            self._cache["wire"] = wire = head + self.body
        return cast(bytes, wire)


def _optional_int(value: str | None, maximum: int, name: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or not value.isascii() or len(value) > 12 or int(value) > maximum:
        raise DecodeError(f"bad {name} {value[:20]!r}", status_hint=400)
    return int(value)


def _normalise_headers(
    headers: tuple[tuple[str, str], ...], body_size: int
) -> tuple[tuple[str, str], ...]:
    """Canonical names, normalised values, exactly one correct Content-Length."""
    out: list[tuple[str, str]] = []
    length = str(body_size)
    seen_length = False
    for name, value in headers:
        canon = g.check_header_name(name)
        if canon == "Content-Length":
            if not seen_length:
                out.append((canon, length))
                seen_length = True
            continue
        out.append((canon, g.check_header_value(value)))
    if not seen_length:
        out.append(("Content-Length", length))
    return tuple(out)


def _fix_length(
    headers: tuple[tuple[str, str], ...], body_size: int
) -> tuple[tuple[str, str], ...]:
    """Headers whose names/values are already normalised: set/dedupe Content-Length only."""
    length = str(body_size)
    out: list[tuple[str, str]] = []
    seen = False
    for item in headers:
        if item[0] == "Content-Length":
            if seen:
                continue
            seen = True
            item = ("Content-Length", length)
        out.append(item)
    if not seen:
        out.append(("Content-Length", length))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SipRequest(_MessageAccess):
    """A SIP request. Construct freely: names, values and Content-Length are normalised."""

    method: str
    uri: SipUri
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    defects: tuple[str, ...] = field(default=(), compare=False)
    _cache: dict[str, object] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if g.TOKEN_RE.fullmatch(self.method) is None or not isinstance(self.uri, SipUri):
            raise LocalProtocolError(f"bad request method or URI: {self.method!r}")
        body = bytes(self.body)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "headers", _normalise_headers(tuple(self.headers), len(body)))

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def _copy_with(
        self, headers: tuple[tuple[str, str], ...], body: bytes, cache: dict[str, object]
    ) -> Self:
        msg = _new_request(self.method, self.uri, headers, body, self.defects, cache)
        return cast(Self, msg)


@dataclass(frozen=True, slots=True)
class SipResponse(_MessageAccess):
    """A SIP response. Construct freely: names, values and Content-Length are normalised."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    defects: tuple[str, ...] = field(default=(), compare=False)
    _cache: dict[str, object] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.status, int) or not 100 <= self.status <= 699:
            raise LocalProtocolError(f"bad status code {self.status!r}")
        if _REASON_BAD_RE.search(self.reason) is not None:
            raise LocalProtocolError("reason phrase must not contain control characters")
        object.__setattr__(self, "reason", g.check_header_value(self.reason))
        body = bytes(self.body)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "headers", _normalise_headers(tuple(self.headers), len(body)))

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def _copy_with(
        self, headers: tuple[tuple[str, str], ...], body: bytes, cache: dict[str, object]
    ) -> Self:
        msg = _new_response(self.status, self.reason, headers, body, self.defects, cache)
        return cast(Self, msg)


_new = object.__new__
_set_req_method = SipRequest.__dict__["method"].__set__
_set_req_uri = SipRequest.__dict__["uri"].__set__
_set_req_headers = SipRequest.__dict__["headers"].__set__
_set_req_body = SipRequest.__dict__["body"].__set__
_set_req_defects = SipRequest.__dict__["defects"].__set__
_set_req_cache = SipRequest.__dict__["_cache"].__set__
_set_resp_status = SipResponse.__dict__["status"].__set__
_set_resp_reason = SipResponse.__dict__["reason"].__set__
_set_resp_headers = SipResponse.__dict__["headers"].__set__
_set_resp_body = SipResponse.__dict__["body"].__set__
_set_resp_defects = SipResponse.__dict__["defects"].__set__
_set_resp_cache = SipResponse.__dict__["_cache"].__set__


def _new_request(
    method: str,
    uri: SipUri,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    defects: tuple[str, ...],
    cache: dict[str, object],
) -> SipRequest:
    """Build without re-validation (parser and _derive already hold normalised parts) and
    without the frozen dataclass's per-field ``object.__setattr__`` calls."""
    msg: SipRequest = _new(SipRequest)
    _set_req_method(msg, method)
    _set_req_uri(msg, uri)
    _set_req_headers(msg, headers)
    _set_req_body(msg, body)
    _set_req_defects(msg, defects)
    _set_req_cache(msg, cache)
    return msg


def _new_response(
    status: int,
    reason: str,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    defects: tuple[str, ...],
    cache: dict[str, object],
) -> SipResponse:
    msg: SipResponse = _new(SipResponse)
    _set_resp_status(msg, status)
    _set_resp_reason(msg, reason)
    _set_resp_headers(msg, headers)
    _set_resp_body(msg, body)
    _set_resp_defects(msg, defects)
    _set_resp_cache(msg, cache)
    return msg


def _derived_cache(parent: dict[str, object]) -> dict[str, object]:
    """A copy's cache: the parent's rendered start line, if any (the start line is the same)."""
    start = parent.get("start")
    return {} if start is None else {"start": start}


# ---------------------------------------------------------------------------- parser
def parse_message_untrusted(data: bytes) -> SipRequest | SipResponse:
    """Parse one SIP message from one datagram. Raises DecodeError only.

    RFC 3261 §18.3: octets after Content-Length bytes of body are ignored; a body shorter
    than Content-Length is an error; without Content-Length the body is the rest.
    """
    try:
        return _parse(data)
    except DecodeError:
        raise
    except (
        ValueError,
        IndexError,
        KeyError,
        TypeError,
        UnicodeError,
        OverflowError,
        RecursionError,
    ) as exc:  # safety net: the contract is DecodeError only
        log.debug("SIP parser safety net caught %r", exc)
        raise DecodeError(f"malformed SIP message ({type(exc).__name__})") from None


def _parse(data: bytes) -> SipRequest | SipResponse:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("SIP message must be bytes")
    data = bytes(data)
    if len(data) > g.MAX_MESSAGE_BYTES:
        raise DecodeError("message too large", status_hint=513, reason="oversize")
    start = 0
    while data.startswith(b"\r\n", start):  # §7.5: ignore CRLFs before the start line
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise DecodeError("no end of header section", reason="truncated")
    breaks = data.count(b"\r\n", start, end)
    if breaks >= MAX_PHYSICAL_LINES or (
        end - start > g.MAX_LINE_BYTES
        and max(map(len, data[start:end].split(b"\r\n"))) > g.MAX_LINE_BYTES
    ):
        raise DecodeError("header section too large", status_hint=513, reason="oversize")
    if data.count(b"\r", start, end) != breaks or data.count(b"\n", start, end) != breaks:
        raise DecodeError("bare CR or LF in header section")
    head = data[start:end].decode("utf-8", "surrogateescape")
    first_end = head.find("\r\n")
    first = head if first_end < 0 else head[:first_end]
    headers, idx = _read_headers(head)
    body = _frame_body(data, end + 4, headers, idx)
    is_response = first.startswith("SIP/")
    start_line = _status_line(first) if is_response else _request_line(first)
    cache: dict[str, object] = {"idx": idx, "start": first}
    defects = _check_mandatory(idx, cache)
    if is_response:
        status, reason = cast(tuple[int, str], start_line)
        if reason != first[12:]:  # the start-line cache must stay canonical
            del cache["start"]
        return _new_response(status, reason, tuple(headers), body, tuple(defects), cache)
    method, uri = cast(tuple[str, SipUri], start_line)
    _request_defects(method, uri, cache, defects)
    return _new_request(method, uri, tuple(headers), body, tuple(defects), cache)


def _read_headers(head: str) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """Header lines as (canonical name, stripped value), and values by lowercased name."""
    lines = head.split("\r\n")
    del lines[0]  # the start line
    if "\r\n " in head or "\r\n\t" in head:
        lines = _unfold(lines)
    headers: list[tuple[str, str]] = []
    idx: dict[str, list[str]] = {}
    entry = _name_entry
    table = _NAME_TABLE
    exact = _EXACT_NAMES
    for line in lines:
        raw_name, colon, raw_value = line.partition(":")
        known = exact.get(raw_name)
        if known is None:
            if not raw_name or not colon:
                raise DecodeError(f"header line without name or colon: {line[:40]!r}")
            known = table.get(raw_name.lower()) or entry(raw_name.rstrip(" \t"))
            if known is None:
                raise DecodeError(f"bad header name {raw_name[:40]!r}")
        elif not colon:
            raise DecodeError(f"header line without colon: {line[:40]!r}")
        canon, key = known
        value = raw_value.strip()
        headers.append((canon, value))
        values = idx.get(key)
        if values is None:
            idx[key] = [value]
        else:
            values.append(value)
    if len(headers) > g.MAX_HEADERS:
        raise DecodeError("too many headers", status_hint=513, reason="oversize")
    return headers, idx


def _unfold(lines: list[str]) -> list[str]:
    """Join each continuation line (§7.3.1) to its header line: the stripped value, one SP,
    the stripped continuation."""
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not out:
                raise DecodeError("continuation line before the first header")
            more = line.strip()
            name, colon, value = out[-1].partition(":")
            if more and colon:  # a line without colon is rejected by the caller
                value = value.strip()
                out[-1] = f"{name}:{value} {more}" if value else f"{name}:{more}"
            continue
        out.append(line)
    return out


def _frame_body(
    data: bytes, body_start: int, headers: list[tuple[str, str]], idx: dict[str, list[str]]
) -> bytes:
    """Apply Content-Length (§18.3) and normalise its header entry."""
    lengths = idx.get("content-length")
    available = len(data) - body_start
    if lengths is None:
        body = data[body_start:]
        size_text = str(len(body))
        headers.append(("Content-Length", size_text))
        idx["content-length"] = [size_text]
        return body
    if len(lengths) > 1:
        raise DecodeError("more than one Content-Length", reason="framing")
    text = lengths[0]
    if not text.isdigit() or not text.isascii() or len(text) > 10:
        raise DecodeError(f"bad Content-Length {text[:20]!r}", reason="framing")
    size = int(text)
    if size > available:
        raise DecodeError("body shorter than Content-Length", reason="truncated")
    if text != str(size):
        i = [name for name, _ in headers].index("Content-Length")
        headers[i] = ("Content-Length", str(size))
        idx["content-length"] = [headers[i][1]]
    return data[body_start : body_start + size]


def _check_mandatory(idx: dict[str, list[str]], cache: dict[str, object]) -> list[str]:
    """Parse Via, Call-ID, CSeq, From, To into the cache; list defects of other headers."""
    defects: list[str] = []
    for key in ("call-id", "cseq", "from", "to"):
        found = idx.get(key)
        if found is None:
            raise DecodeError(f"missing mandatory header {key}", status_hint=400)
        if len(found) > 1:
            defects.append(f"{DEFECT_DUPLICATE}:{key}")
    via_values = idx.get("via")
    if via_values is None:
        raise DecodeError("missing mandatory header via", status_hint=400)
    cache["vias"] = parse_vias_untrusted(via_values)
    call_id = idx["call-id"][0]
    if g.CALL_ID_RE.fullmatch(call_id) is None:
        raise DecodeError(f"bad Call-ID {call_id[:60]!r}")
    cseq = parse_cseq_untrusted(idx["cseq"][0])
    cache["cseq"] = cseq  # parse_cseq_untrusted refuses numbers of 2**31 and more
    cache["from"] = parse_name_addr_untrusted(idx["from"][0])
    cache["to"] = parse_name_addr_untrusted(idx["to"][0])
    _check_optional(idx, cache, defects)
    return defects


def _check_optional(
    idx: dict[str, list[str]], cache: dict[str, object], defects: list[str]
) -> None:
    mf = idx.get("max-forwards")
    if mf is not None:
        if len(mf) > 1:
            defects.append(f"{DEFECT_DUPLICATE}:max-forwards")
        try:
            _optional_int(mf[0], g.MAX_MAX_FORWARDS, "Max-Forwards")
        except DecodeError:
            defects.append(DEFECT_MAX_FORWARDS)
    exp = idx.get("expires")
    if exp is not None:
        try:
            _optional_int(exp[0], g.MAX_DELTA_SECONDS, "Expires")
        except DecodeError:
            defects.append(DEFECT_EXPIRES)
    date = idx.get("date")
    if date is not None and _DATE_RE.fullmatch(date[0]) is None:
        defects.append(DEFECT_DATE)
    contact = idx.get("contact")
    if contact is not None and not (len(contact) == 1 and contact[0] == "*"):
        try:
            cache["contacts"] = parse_name_addr_list_untrusted(contact)
        except DecodeError:
            defects.append(DEFECT_CONTACT)


def _request_line(first: str) -> tuple[str, SipUri]:
    if len(first) <= FAST_REQUEST_LINE_MAX_CHARS:
        f = _FAST_REQUEST_LINE_RE.fullmatch(first)
        if f is not None:
            method, scheme, user, host, port, params = f.groups()
            return method, simple_sip_uri_untrusted(scheme, user, host, port, params)
    m = _REQUEST_LINE_RE.fullmatch(first)
    if m is None:
        raise DecodeError(f"bad Request-Line {first[:80]!r}")
    method, uri_text, version = m.group(1, 2, 3)
    if version != "2.0":
        raise DecodeError(f"unsupported SIP version {version}", status_hint=505, reason="version")
    return method, parse_uri_untrusted(uri_text)


def _status_line(first: str) -> tuple[int, str]:
    m = _STATUS_LINE_RE.fullmatch(first)
    if m is None:
        raise DecodeError(f"bad Status-Line {first[:80]!r}")
    version, code, reason = m.group(1, 2, 3)
    if version != "2.0":
        raise DecodeError(f"unsupported SIP version {version}", status_hint=505, reason="version")
    status = int(code)
    if not 100 <= status <= 699:
        raise DecodeError(f"status code out of range: {status}")
    return status, reason.strip()


def _request_defects(
    method: str, uri: SipUri, cache: dict[str, object], defects: list[str]
) -> None:
    """Request-only semantic findings (RFC 4475 §3.1.2.11, §3.1.2.17-18, §3.2.1)."""
    if uri.headers:
        defects.append(DEFECT_RURI_HEADERS)
    if cast(CSeq, cache["cseq"]).method != method:
        defects.append(DEFECT_CSEQ_METHOD)
    if cast(tuple[Via, ...], cache["vias"])[0].branch == "z9hG4bK":
        defects.append(DEFECT_BRANCH_COOKIE_ONLY)


def replace_uri(request: SipRequest, uri: SipUri) -> SipRequest:
    """Copy of ``request`` with a new Request-URI (proxies and UACs re-targeting)."""
    return replace(request, uri=uri)
