"""Hostile SIP datagrams: what a fuzzer, a scanner or a broken client sends a gateway.

:func:`hostile_datagram` cycles through kinds (:data:`KINDS`): random bytes, truncations,
out-of-range numbers in every numeric header (CSeq, Max-Forwards, Expires, Content-Length,
Via port and rport, status codes, Retry-After, Contact expires, RSeq), PROTOS c07-sip style
field mutations (overflows, format strings, NULs, missing separators, odd line ends), byte
flips, the RFC 4475 invalid messages, oversized messages, Proxy-Require, responses nobody
asked for. Requests are addressed to ``target`` (an AoR) and carry ``via`` as the sender's
``host:port`` so answers come back to it. Deterministic for a given ``random.Random``.
"""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path
from typing import Final

VECTORS: Final = Path(__file__).resolve().parents[2] / "tests" / "sip" / "vectors" / "rfc4475"
#: RFC 4475 §3.1.2 / §3.3 messages a server must refuse (or answer with an error).
INVALID_VECTORS: Final = ("badinv01", "clerr", "ncl", "scalar02", "scalarlg", "quotbal",
                          "ltgtruri", "lwsruri", "lwsstart", "trws", "escruri", "baddate",
                          "regbadct", "badaspec", "baddn", "badvers", "mismatch01",
                          "mismatch02", "bigcode", "badbranch", "insuf", "unkscm", "novelsc",
                          "unksm2", "bext01", "multi01", "mcl01", "zeromf")
#: Numbers that break a parser that trusts them.
BAD_NUMBERS: Final = ("2147483648", "4294967296", "18446744073709551616",
                      "36893488147419103232", "9" * 60, "-1", "0x10", "1e9", "²", "٣", "")
#: PROTOS-style replacement values of one field.
OVERFLOWS: Final = ("A" * 4096, "%s%n%x%d" * 64, "\x00" * 16, "<" * 512, ";" * 1024,
                    '"' * 255, "\\" * 128, "sip:" + "@" * 300, "\udcff" * 10)
NUMERIC_HEADERS: Final = ("CSeq", "Max-Forwards", "Expires", "Content-Length",
                          "Retry-After", "RSeq", "Session-Expires", "Min-Expires")
METHODS: Final = ("OPTIONS", "MESSAGE", "INVITE", "REGISTER", "BYE", "SUBSCRIBE", "NOTIFY",
                  "CANCEL", "ACK", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH")
#: Largest UDP payload sent (the biggest datagram an IPv4 socket takes).
MAX_UDP_PAYLOAD: Final = 65507


def base_request(method: str, target: str, via: str, n: int, body: str = "") -> str:
    """A valid request (text) from the sender at ``via`` (``host:port``). Every other
    REGISTER is a scanner's (a name of its own, ``sip:scan<n>@``); the others register the
    target's AoR itself from a client that never answers: a local client may take its
    node's AoR (a softphone), and what is then forwarded to it must not fill the node."""
    if method == "REGISTER" and (n // len(METHODS)) % 2:
        domain = target.partition("@")[2] or "incident.local"
        target = f"sip:scan{n % 1000}@{domain}"
    return (f"{method} {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {via};branch=z9hG4bKh{n};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:hostile@incident.local>;tag=h{n}\r\n"
            f"To: <{target}>\r\nCall-ID: hostile-{n}@x\r\nCSeq: {n % 1000 + 1} {method}\r\n"
            f"Contact: <sip:hostile@{via}>\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}")


@cache
def _vector(name: str) -> bytes:
    return (VECTORS / f"{name}.dat").read_bytes()


def _numbers(rng: random.Random, text: str) -> str:
    """Every numeric header (and Via port/rport, Contact expires) given a bad number."""
    bad = rng.choice(BAD_NUMBERS)
    header = rng.choice(NUMERIC_HEADERS)
    lines = text.split("\r\n")
    for i, line in enumerate(lines):
        if line.lower().startswith(header.lower() + ":"):
            rest = line.split(":", 1)[1].strip().split(" ", 1)
            lines[i] = f"{header}: {bad}" + (f" {rest[1]}" if len(rest) > 1 else "")
            break
    else:
        lines.insert(2, f"{header}: {bad}")
    out = "\r\n".join(lines)
    choice = rng.randrange(4)
    if choice == 0:
        out = out.replace(";rport", f";rport={bad}", 1)
    elif choice == 1:
        out = out.replace("Via: SIP/2.0/UDP ", "Via: SIP/2.0/UDP 127.0.0.1:" + bad + ";x=", 1)
    elif choice == 2:
        out = out.replace("Contact: <sip:hostile@", f"Contact: ;expires={bad} <sip:h@", 1)
    return out


def _protos(rng: random.Random, text: str) -> str:
    """One field replaced the way the PROTOS c07-sip cases do."""
    value = rng.choice(OVERFLOWS)
    lines = text.split("\r\n")
    where = rng.randrange(len(lines) - 2)
    line = lines[where]
    if where == 0:
        parts = line.split(" ")
        parts[rng.randrange(len(parts))] = value
        lines[0] = " ".join(parts)
    elif rng.random() < 0.5:
        name = line.split(":", 1)[0]
        lines[where] = f"{name}: {value}"
    else:
        lines[where] = line.replace(":", rng.choice(["", "::", ": \r", ":\n"]), 1)
    sep = rng.choice(["\r\n", "\r\n", "\n", "\r", "\r\n\r\n"])
    return sep.join(lines)


def hostile_datagram(rng: random.Random, n: int, target: str, via: str) -> bytes:
    """The ``n``-th hostile datagram (see the module docstring)."""
    method = METHODS[n % len(METHODS)]
    text = base_request(method, target, via, n, "hi" if method == "MESSAGE" else "")
    kind = KINDS[n % len(KINDS)]
    if kind == "random":
        return rng.randbytes(rng.randrange(1, 1500))
    if kind == "truncated":
        data = text.encode()
        return data[: rng.randrange(1, len(data))]
    if kind == "numbers":
        return _numbers(rng, text).encode("utf-8", "surrogateescape")
    if kind == "protos":
        return _protos(rng, text).encode("utf-8", "surrogateescape")
    if kind == "flips":
        flipped = bytearray(text.encode())
        for _ in range(rng.randrange(1, 12)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        return bytes(flipped)
    if kind == "rfc4475":
        return _vector(INVALID_VECTORS[(n // len(KINDS)) % len(INVALID_VECTORS)])
    if kind == "oversized":
        size = rng.choice([15_000, 30_000, MAX_UDP_PAYLOAD])
        pad = "X-Pad: " + "p" * 990 + "\r\n"
        head = text.replace("\r\n\r\n", "\r\n" + pad * (size // len(pad)) + "\r\n", 1)
        return head.encode()[:MAX_UDP_PAYLOAD]
    if kind == "extensions":
        return text.replace("Max-Forwards: 70", rng.choice([
            "Max-Forwards: 70\r\nProxy-Require: nosuch, other",
            "Max-Forwards: 0", "Max-Forwards: 70\r\nRequire: 100rel, nosuch",
            "Max-Forwards: 70\r\nContent-Length: 0"]), 1).encode()
    status = rng.choice(["99", "700", "4294967301", "200", "183"])      # "responses"
    return (f"SIP/2.0 {status} Odd\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKr{n}\r\n"
            f"From: <sip:hostile@incident.local>;tag=r\r\nTo: <{target}>;tag=t\r\n"
            f"Call-ID: hostile-r{n}@x\r\nCSeq: {rng.choice(BAD_NUMBERS[:4])} INVITE\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


KINDS: Final = ("random", "truncated", "numbers", "protos", "flips", "rfc4475", "numbers",
                "oversized", "extensions", "responses")
