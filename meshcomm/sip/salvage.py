"""The answer to a request the parser refused, built from the headers that can be read.

RFC 3261 §8.2 and RFC 4475 §3.1.2 / §3.3 ask a server to answer a malformed request (400,
505 for an unknown SIP version, 513 when it is too large) whenever a response can still be
formed: the request is not an ACK and carries a Via to answer along. The parser refuses
such a request as a whole (a :class:`~meshcomm.errors.DecodeError` with a status hint), so
:func:`error_response_untrusted` reads only what a response copies (§8.2.6.2: Via, From,
To, Call-ID, CSeq) from the raw bytes, line by line, keeps the values that are safe to
echo (no control characters, bounded length) and builds the answer's wire bytes.

What it reads is bounded: the first :data:`MAX_SALVAGE_BYTES` of the datagram, at most
:data:`MAX_SALVAGED_VIAS` Via values and :data:`MAX_SALVAGED_VALUE_CHARS` per value; the
answer is never larger than the request's header section (no amplification).
"""

from __future__ import annotations

import re
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.sip import grammar as g
from meshcomm.sip.build import reason_phrase

#: Only this much of a datagram is read to answer it (an oversized one included).
MAX_SALVAGE_BYTES: Final = 16 * 1024
#: Longest header value echoed in an answer.
MAX_SALVAGED_VALUE_CHARS: Final = 1024
#: Most Via values echoed (a longer chain is answered with its first ones).
MAX_SALVAGED_VIAS: Final = 70
#: Statuses an answer may carry (a hint outside is answered 400).
ANSWER_STATUSES: Final = frozenset({400, 413, 414, 416, 420, 505, 513})
#: Copied into the answer when present (canonical names), in this order after Via.
_COPIED: Final = ("From", "To", "Call-ID", "CSeq")
_METHOD_RE: Final = re.compile(rf"([{g.TOKEN_CHARS}]+)[ \t]")
_UNSAFE_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TAG_RE: Final = re.compile(r";\s*tag\s*=", re.IGNORECASE)


def error_response_untrusted(data: bytes, error: DecodeError, to_tag: str) -> bytes | None:
    """Wire bytes of the answer to the refused request ``data`` (status from ``error``'s
    hint), or None when no answer can be formed: a response, an ACK, no readable start
    line, no Via. ``to_tag`` is added to To when it has no tag. Never raises."""
    head = _header_section(data[:MAX_SALVAGE_BYTES])
    if head is None:
        return None
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    match = _METHOD_RE.match(lines[0])
    if match is None or lines[0].startswith("SIP/") or match.group(1) == "ACK":
        return None
    vias, copied = _read(lines[1:])
    if not vias:
        return None
    to = copied.get("To")
    if to is not None and _TAG_RE.search(to) is None:
        copied["To"] = f"{to};tag={to_tag}"
    status = error.status_hint if error.status_hint in ANSWER_STATUSES else 400
    out = [f"SIP/2.0 {status} {reason_phrase(status)}"]
    out += [f"Via: {via}" for via in vias]
    out += [f"{name}: {copied[name]}" for name in _COPIED if name in copied]
    out += ["Content-Length: 0", "", ""]
    return "\r\n".join(out).encode("utf-8", "surrogateescape")


def _header_section(data: bytes) -> bytes | None:
    """The start line and header lines: up to the blank line, else (truncated or
    oversized) up to the last complete line."""
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        end = data.rfind(b"\r\n")
    if end <= start:
        return None
    return data[start:end]


def _read(lines: list[str]) -> tuple[list[str], dict[str, str]]:
    """Via values (comma-split, in order, bounded) and the first safe value of each copied
    header, from header lines (continuation lines joined)."""
    vias: list[str] = []
    copied: dict[str, str] = {}
    for name, value in _unfolded(lines):
        canon = g.canonical_header_name(name)
        if not value or _UNSAFE_RE.search(value):
            continue
        if canon == "Via":
            vias.extend(part for part in (p.strip() for p in value.split(","))
                        if part and len(part) <= MAX_SALVAGED_VALUE_CHARS)
        elif (canon in _COPIED and canon not in copied
              and len(value) <= MAX_SALVAGED_VALUE_CHARS):
            copied[canon] = value
    return vias[:MAX_SALVAGED_VIAS], copied


def _unfolded(lines: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if out:
                name, value = out[-1]
                out[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        if colon and g.TOKEN_RE.fullmatch(name.strip()) is not None:
            out.append((name.strip(), value.strip()))
    return out
