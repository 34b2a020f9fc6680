"""Compact SIP between gateways (issue 13.1): a lossless, shorter form of a SIP message for
the mesh, and its bounded expansion (sans-IO; see docs/compact-sip.md).

Forms (the first byte, :class:`Form`)::

    RAW       0 | the SIP bytes as they are (anything the others cannot carry)
    RAW_Z     1 | raw deflate, preset dictionary ZDICT, of the SIP bytes
    TOKENS    2 | tokenised head | 0x00 | body
    TOKENS_Z  3 | raw deflate (ZDICT) of: tokenised head | 0x00 | body
    REF       4 | n | reference n | tokenised head | 0x00 | body
    REF_Z     5 | n | reference n | raw deflate (ZDICT) of: tokenised head | 0x00 | body

REF forms are a response written against its request (RFC 3261 §8.2.6.2: a response copies
the request's Via, From, To, Call-ID and CSeq): the reference names the request (both
gateways hold it: one sent it, the other received it) and the request's header lines that
a response copies become further context words (:class:`Reference`). A receiver that no
longer holds the request raises :class:`UnknownReference`; the sender then sends the
message again without it (meshcomm.node.e2e_sip).

The tokenised head is the head's text (start line and header lines, up to the blank line)
with these substitutions, everything else literal:

* ``0x80 + i``: static word ``i`` (:data:`meshcomm.sip.compact_dict.STATIC_WORDS`: start
  lines by method, status lines with their RFC 3261 reason phrase, header starts such as
  ``CRLF Via: SIP/2.0/UDP``, common values);
* ``0x04``-``0x08``, ``0x0B``-``0x0E``: context word 0-8, ``0x0F i``: context word ``i``
  (:class:`CompactContext`: what both gateways derive from the two node ids, e.g. the
  sending gateway's own top Via ``CRLF Via: SIP/2.0/UDP <node>.mesh;branch=z9hG4bK``; then
  a REF form's request lines, matched at the start of a line);
* ``0x0A``: CRLF; ``0x03``: ``CRLF Content-Length: <length of the body>`` (recomputed);
* ``0x10``-``0x1F``: 1-16 bytes written as lower-case hex (tags, branches, Call-IDs);
  ``0x02 n``: n (17-255) bytes written as lower-case hex;
* ``0x01 b``: byte ``b`` literally (a byte that is a code: other control bytes, non-ASCII).

The sender picks the shortest form; every form gives back exactly the bytes compacted
(checked before sending: a form that would not is not used), so what the far gateway hands
its client is what the near gateway sent.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from meshcomm.errors import DecodeError
from meshcomm.sip.compact_dict import STATIC_WORDS, ZDICT


class Form(IntEnum):
    RAW = 0
    RAW_Z = 1
    TOKENS = 2
    TOKENS_Z = 3
    REF = 4
    REF_Z = 5


END: Final = 0x00
ESC: Final = 0x01
HEX_LONG: Final = 0x02
CONTENT_LENGTH: Final = 0x03
CRLF: Final = 0x0A
CONTEXT_LONG: Final = 0x0F              # operand: the context word's index
HEX_SHORT_BASE: Final = 0x0F            # 0x10 .. 0x1F: 1 .. 16 bytes of hex
MAX_HEX_SHORT: Final = 16
MAX_HEX_LONG: Final = 255
WORD_BASE: Final = 0x80
#: One-byte codes of context words 0..8.
CONTEXT_CODES: Final = (0x04, 0x05, 0x06, 0x07, 0x08, 0x0B, 0x0C, 0x0D, 0x0E)
MAX_CONTEXT_WORDS: Final = 16
#: A REF form's request lines (a response copies them) and their longest line.
MAX_REFERENCE_WORDS: Final = 16
MAX_REFERENCE_WORD_CHARS: Final = 512
MAX_REFERENCE_BYTES: Final = 32
#: Shortest hex run worth a code (3 bytes for 6 characters).
MIN_HEX_CHARS: Final = 6
CONTENT_LENGTH_WORD: Final = "\r\nContent-Length: "
DEFLATE_WBITS: Final = -15              # raw deflate: no zlib header, no checksum
DEFLATE_LEVEL: Final = 9
_HEAD_END: Final = b"\r\n\r\n"
#: Header names whose lines a response copies from its request (§8.2.6.2, §12.1.1).
COPIED_HEADERS: Final = frozenset({"via", "v", "from", "f", "to", "t", "call-id", "i",
                                   "cseq", "record-route"})


class UnknownReference(DecodeError):
    """A REF form names a request this side does not hold."""


@dataclass(frozen=True, slots=True)
class CompactContext:
    """What both ends know: context words (each a code, :data:`CONTEXT_CODES`) and the
    largest message an expansion may give."""

    words: tuple[str, ...]
    max_bytes: int

    def __post_init__(self) -> None:
        if len(self.words) > MAX_CONTEXT_WORDS or any(not w for w in self.words):
            raise ValueError(f"at most {MAX_CONTEXT_WORDS} non-empty context words")


@dataclass(frozen=True, slots=True)
class Reference:
    """A request both ends hold: its name (``ref``, 1-32 bytes) and the lines a response
    copies from it (:func:`reference_words`)."""

    ref: bytes
    words: tuple[str, ...]


#: Looks a reference up (None: not held).
Lookup = Callable[[bytes], tuple[str, ...] | None]


def reference_words(message: bytes) -> tuple[str, ...]:
    """The header lines (with their leading CRLF) a response copies from request
    ``message``, at most :data:`MAX_REFERENCE_WORDS`."""
    head = message.partition(_HEAD_END)[0].decode("latin-1")
    words: list[str] = []
    for line in head.split("\r\n")[1:]:
        name = line.partition(":")[0].strip().lower()
        if name in COPIED_HEADERS and 0 < len(line) <= MAX_REFERENCE_WORD_CHARS:
            words.append("\r\n" + line)
            if len(words) == MAX_REFERENCE_WORDS:
                break
    return tuple(dict.fromkeys(words))


_CODE_OF_WORD: Final = {w: WORD_BASE + i for i, w in enumerate(STATIC_WORDS)}
_MESH_LIKE: Final = (r"\r\nVia: SIP/2\.0/UDP [0-9a-f]{16}\.mesh;branch=z9hG4bK",
                     r";lr;mesh=[0-9a-f]{16}>", r"[0-9a-f]{16}\.mesh")


def _pattern(mesh: bool) -> re.Pattern[str]:
    alternatives = list(_MESH_LIKE) if mesh else []
    alternatives += [re.escape(w) for w in sorted(_CODE_OF_WORD, key=len, reverse=True)]
    alternatives += [r"\r\n", f"[0-9a-f]{{{MIN_HEX_CHARS},}}", r"[\x00-\x08\x0a-\x1f\x80-\xff]"]
    return re.compile("|".join(alternatives))


#: Tokens: context-shaped text first (kept only when it is a context word), then the
#: static words longest first, CRLF, hex runs and bytes that need an escape.
_TOKENS: Final = _pattern(True)
_STATIC_TOKENS: Final = _pattern(False)


def _context_code(index: int) -> bytes:
    return bytes([CONTEXT_CODES[index]] if index < len(CONTEXT_CODES)
                 else [CONTEXT_LONG, index])


def _hex_tokens(run: str) -> bytearray:
    out = bytearray()
    raw = bytes.fromhex(run)
    while raw:
        chunk, raw = raw[:MAX_HEX_LONG], raw[MAX_HEX_LONG:]
        if len(chunk) <= MAX_HEX_SHORT:
            out.append(HEX_SHORT_BASE + len(chunk))
        else:
            out += bytes((HEX_LONG, len(chunk)))
        out += chunk
    return out


def _tokenise(text: str, content_length: str, index: dict[str, int],
              pattern: re.Pattern[str] = _TOKENS) -> bytearray:
    """One segment of the head (a line with its leading CRLF, or part of one)."""
    out = bytearray()
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        out += text[pos:m.start()].encode("latin-1")
        token, pos = m.group(), m.end()
        if token in index:
            out += _context_code(index[token])
        elif token == CONTENT_LENGTH_WORD and text[pos:] == content_length:
            out.append(CONTENT_LENGTH)
            pos = len(text)
        elif token in _CODE_OF_WORD:
            out.append(_CODE_OF_WORD[token])
        elif token == "\r\n":
            out.append(CRLF)
        elif token.endswith((".mesh", ">", "z9hG4bK")):       # mesh-shaped, not ours
            out += _tokenise(token, content_length, {}, _STATIC_TOKENS)
        elif len(token) >= MIN_HEX_CHARS:
            even = len(token) - len(token) % 2
            out += _hex_tokens(token[:even])
            pos = m.start() + even
        else:
            out += bytes((ESC, ord(token)))
    out += text[pos:].encode("latin-1")
    return out


@functools.lru_cache(maxsize=64)
def _word_tables(words: tuple[str, ...], first_line_word: int
                 ) -> tuple[dict[str, int], tuple[tuple[str, int], ...]]:
    """The index of ``words[:first_line_word]`` (first occurrence wins) and the line-start
    words ``words[first_line_word:]`` longest first, with their indices. Cached: a
    gateway pair's context words are the same for every message between them."""
    index = {w: i for i, w in reversed(list(enumerate(words[:first_line_word])))}
    line_words = tuple(sorted(((w, i) for i, w in enumerate(words) if i >= first_line_word),
                              key=lambda wi: len(wi[0]), reverse=True))
    return index, line_words


def _tokenise_head(head: str, body_len: int, words: tuple[str, ...],
                   first_line_word: int) -> bytes:
    """The head tokenised; ``words[first_line_word:]`` match only at line starts."""
    index, line_words = _word_tables(words, first_line_word)
    lines = head.split("\r\n")
    content_length = str(body_len)
    out = _tokenise(lines[0], content_length, index)
    for line in lines[1:]:
        text = "\r\n" + line
        for word, i in line_words:
            if text.startswith(word):
                out += _context_code(i)
                text = text[len(word):]
                break
        out += _tokenise(text, content_length, index)
    return bytes(out)


def _deflate(data: bytes) -> bytes:
    obj = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, DEFLATE_WBITS, zdict=ZDICT)
    return obj.compress(data) + obj.flush()


def compact(message: bytes, ctx: CompactContext, ref: Reference | None = None) -> bytes:
    """The shortest form of ``message`` that expands (with the same context and, for a
    REF form, the same reference) to exactly ``message``."""
    candidates = [bytes([Form.RAW]) + message]
    head, sep, body = message.partition(_HEAD_END)
    if not sep:
        candidates.append(bytes([Form.RAW_Z]) + _deflate(message))
    else:
        text = head.decode("latin-1")
        if ref is not None and 0 < len(ref.ref) <= MAX_REFERENCE_BYTES and ref.words:
            # a response's copied lines make REF shorter than TOKENS by far: only REF
            words = ctx.words + ref.words[:MAX_REFERENCE_WORDS]
            tokenised = _tokenise_head(text, len(body), words, len(ctx.words)) + b"\x00" + body
            name = bytes([len(ref.ref)]) + ref.ref
            candidates += [bytes([Form.REF]) + name + tokenised,
                           bytes([Form.REF_Z]) + name + _deflate(tokenised)]
        else:
            tokenised = (_tokenise_head(text, len(body), ctx.words, len(ctx.words)) + b"\x00"
                         + body)
            candidates += [bytes([Form.TOKENS]) + tokenised,
                           bytes([Form.TOKENS_Z]) + _deflate(tokenised)]
    lookup = (lambda _name: ref.words) if ref is not None else None
    for form in sorted(candidates, key=len):
        try:
            if expand_untrusted(form, ctx, lookup) == message:
                return form
        except DecodeError:
            continue
    return candidates[0]


def _inflate(data: bytes, max_bytes: int) -> bytes:
    try:
        obj = zlib.decompressobj(DEFLATE_WBITS, zdict=ZDICT)
        out = obj.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise DecodeError(f"compact SIP does not inflate: {exc}") from exc
    if len(out) > max_bytes:
        raise DecodeError("compact SIP inflates beyond the limit", reason="oversize")
    if not obj.eof or obj.unused_data or obj.unconsumed_tail:
        raise DecodeError("compact SIP deflate stream truncated or padded", reason="truncated")
    return out


def _context_word(index: int, words: tuple[str, ...]) -> bytes:
    if index >= len(words):
        raise DecodeError(f"compact SIP context word {index} undefined")
    return words[index].encode("latin-1")


def _word(code: int, words: tuple[str, ...]) -> bytes:
    """What a one-byte code (no operand) stands for."""
    if code >= WORD_BASE:
        index = code - WORD_BASE
        if index >= len(STATIC_WORDS):
            raise DecodeError(f"compact SIP word {index} undefined")
        return STATIC_WORDS[index].encode("latin-1")
    if code in CONTEXT_CODES:
        return _context_word(CONTEXT_CODES.index(code), words)
    if code == CRLF:
        return b"\r\n"
    return bytes([code])                # printable ASCII and tab are literal


def _operand(data: bytes, pos: int) -> int:
    if pos >= len(data):
        raise DecodeError("compact SIP code without its operand", reason="truncated")
    return data[pos]


def _plain_code(code: int) -> bytes | None:
    """What a one-byte code without operand stands for (None: a code read by
    :func:`_expand_head` itself, or an undefined word)."""
    if code >= WORD_BASE:
        index = code - WORD_BASE
        return STATIC_WORDS[index].encode("latin-1") if index < len(STATIC_WORDS) else None
    if code in (END, ESC, HEX_LONG, CONTENT_LENGTH, CONTEXT_LONG) or code in CONTEXT_CODES \
            or HEX_SHORT_BASE < code <= HEX_SHORT_BASE + MAX_HEX_SHORT:
        return None
    return b"\r\n" if code == CRLF else bytes([code])   # printable ASCII and tab: literal


#: Every code that stands for fixed bytes (literals, CRLF, static words), by code.
_PLAIN: Final = tuple(_plain_code(code) for code in range(256))


def _expand_head(data: bytes, words: tuple[str, ...],
                 max_bytes: int) -> tuple[bytes, int, list[int]]:
    """The head of a tokenised message, where its body starts and where the recomputed
    Content-Length headers go."""
    out = bytearray()
    marks: list[int] = []
    pos, size, plain = 0, len(data), _PLAIN
    while pos < size:
        code = data[pos]
        pos += 1
        piece = plain[code]
        if piece is not None:
            out += piece
        elif code == END:
            return bytes(out), pos, marks
        elif code == CONTENT_LENGTH:
            marks.append(len(out))          # filled in once the body is known
            continue
        elif code == ESC:
            out.append(_operand(data, pos))
            pos += 1
            continue
        elif code == CONTEXT_LONG:
            out += _context_word(_operand(data, pos), words)
            pos += 1
        elif code == HEX_LONG or HEX_SHORT_BASE < code <= HEX_SHORT_BASE + MAX_HEX_SHORT:
            if code == HEX_LONG:
                count, pos = _operand(data, pos), pos + 1
            else:
                count = code - HEX_SHORT_BASE
            if count == 0 or pos + count > size:
                raise DecodeError("compact SIP hex run truncated", reason="truncated")
            out += data[pos:pos + count].hex().encode("ascii")
            pos += count
        else:
            out += _word(code, words)       # a context word, or an undefined word: raises
        if len(out) > max_bytes:
            raise DecodeError("compact SIP expands beyond the limit", reason="oversize")
    raise DecodeError("compact SIP head without its end", reason="truncated")


def _detokenise(data: bytes, words: tuple[str, ...], max_bytes: int) -> bytes:
    head, start, marks = _expand_head(data, words, max_bytes)
    body = data[start:]
    if len(head) + len(marks) * len(CONTENT_LENGTH_WORD) > max_bytes:
        raise DecodeError("compact SIP expands beyond the limit", reason="oversize")
    if marks:
        length = f"{CONTENT_LENGTH_WORD}{len(body)}".encode("ascii")
        parts, last = [], 0
        for mark in marks:
            parts += [head[last:mark], length]
            last = mark
        head = b"".join(parts) + head[last:]
    message = head + _HEAD_END + body
    if len(message) > max_bytes:
        raise DecodeError("compact SIP expands beyond the limit", reason="oversize")
    return message


def _referenced(data: bytes, ctx: CompactContext,
                lookup: Lookup | None) -> tuple[tuple[str, ...], bytes]:
    """A REF form's context words and the rest after its reference."""
    size = _operand(data, 0)
    if not 0 < size <= MAX_REFERENCE_BYTES or len(data) < 1 + size:
        raise DecodeError("compact SIP reference truncated", reason="truncated")
    words = lookup(data[1:1 + size]) if lookup is not None else None
    if words is None:
        raise UnknownReference("compact SIP names a request not held here")
    return ctx.words + words[:MAX_REFERENCE_WORDS], data[1 + size:]


def expand_untrusted(data: bytes, ctx: CompactContext, lookup: Lookup | None = None) -> bytes:
    """The SIP message a compact form stands for (``lookup``: the request lines of a REF
    form's reference). Raises only DecodeError (unknown form, undefined code, truncated
    operand or deflate stream, more than ``ctx.max_bytes``; :class:`UnknownReference`)."""
    if not data:
        raise DecodeError("empty compact SIP", reason="truncated")
    form, rest = data[0], data[1:]
    if form == Form.RAW:
        if len(rest) > ctx.max_bytes:
            raise DecodeError("compact SIP beyond the limit", reason="oversize")
        return rest
    if form == Form.RAW_Z:
        return _inflate(rest, ctx.max_bytes)
    if form in (Form.TOKENS, Form.TOKENS_Z):
        words = ctx.words
    elif form in (Form.REF, Form.REF_Z):
        words, rest = _referenced(rest, ctx, lookup)
    else:
        raise DecodeError(f"unknown compact SIP form {form}", reason="version")
    if form in (Form.TOKENS_Z, Form.REF_Z):
        rest = _inflate(rest, ctx.max_bytes)
    return _detokenise(rest, words, ctx.max_bytes)
