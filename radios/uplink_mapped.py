"""Which address a NAT maps the uplink transport to (issue 10: relays behind NATs).

A relay behind a NAT (LTE carrier-grade NAT, a satellite terminal) cannot know the public
address its datagrams leave from; a reachable peer (a ``dht-node``) sees it. The uplink
radio asks its configured peers, STUN-style (RFC 8489's binding request, reduced to what
we need), and the answers are the *mapped* addresses the relay then names in its uplink-mesh
binding and DHT attachments, so another relay behind a NAT can send to it directly and both
NATs open (hole punching, where the NATs keep one mapping per source port).

Two control datagrams travel beside the mesh's frames on the uplink socket; they start with
:data:`MAGIC` (a zero byte: no mesh frame starts so) and never reach the node:

* ``MAGIC + b"?" + nonce`` (8 random bytes): "what address do you see me at?";
* ``MAGIC + b"!" + nonce + b"HOST:PORT"``: the answer, to the address it saw.

An answer counts only with the nonce of the last question to that peer (an off-path
sender cannot plant an address); answering is rate-limited (a spoofed question only
reflects a datagram about as small as itself, and rarely). A mapped address is kept while
answers keep naming it (:data:`MAPPED_FRESH_S`).
"""

from __future__ import annotations

import secrets
from typing import Final

from meshcomm.overlay.ratelimit import TokenBucket

MAGIC: Final = b"\x00mcup"
QUESTION: Final = MAGIC + b"?"
ANSWER: Final = MAGIC + b"!"
NONCE_BYTES: Final = 8
#: Longest HOST:PORT text in an answer ("[ipv6]:port").
MAX_ADDR_CHARS: Final = 64
#: Configured peers are asked this often (it also keeps the NAT's mapping open).
PROBE_INTERVAL_S: Final = 25.0
#: A mapped address no answer named for this long is dropped.
MAPPED_FRESH_S: Final = 3 * PROBE_INTERVAL_S
#: Answers sent at most at this rate (and burst).
ANSWERS_PER_S: Final = 20.0
ANSWERS_BURST: Final = 40
#: Mapped addresses kept at once (one per family and NAT is the normal case).
MAX_MAPPED: Final = 4


def is_control(data: bytes) -> bool:
    return data.startswith(MAGIC)


def answer_for(question: bytes, seen_as: str) -> bytes | None:
    """The answer to a well-formed question from ``seen_as``; None for anything else."""
    if len(question) != len(QUESTION) + NONCE_BYTES or not question.startswith(QUESTION):
        return None
    return ANSWER + question[len(QUESTION):] + seen_as.encode("ascii")


class MappedAddresses:
    """Questions asked, answers checked, mapped addresses kept (sans-IO; ``now`` given)."""

    def __init__(self) -> None:
        self._asked: dict[str, bytes] = {}
        self._mapped: dict[str, float] = {}
        self._answers = TokenBucket(ANSWERS_PER_S, ANSWERS_BURST)

    def question(self, peer: str) -> bytes:
        """A new question for ``peer`` (its nonce replaces the previous one)."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        self._asked[peer] = nonce
        return QUESTION + nonce

    def may_answer(self, now: float) -> bool:
        return self._answers.take(now)

    def on_answer(self, data: bytes, src: str, now: float) -> str | None:
        """The address an answer from ``src`` names, if it answers our last question to
        ``src`` (else None; the caller checks the address's form)."""
        head = len(ANSWER) + NONCE_BYTES
        if not data.startswith(ANSWER) or len(data) <= head or len(data) > head + \
                MAX_ADDR_CHARS:
            return None
        nonce = self._asked.get(src)
        if nonce is None or data[len(ANSWER):head] != nonce:
            return None
        del self._asked[src]
        try:
            addr = data[head:].decode("ascii")
        except UnicodeDecodeError:
            return None
        if addr not in self._mapped and len(self._mapped) >= MAX_MAPPED:
            oldest = min(self._mapped, key=self._mapped.__getitem__)
            del self._mapped[oldest]
        self._mapped[addr] = now
        return addr

    def fresh(self, now: float) -> tuple[str, ...]:
        """The mapped addresses answers named within MAPPED_FRESH_S, oldest first."""
        for addr in [a for a, t in self._mapped.items() if now - t > MAPPED_FRESH_S]:
            del self._mapped[addr]
        return tuple(sorted(self._mapped, key=self._mapped.__getitem__))
