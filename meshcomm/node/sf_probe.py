"""Reachability probes of a store-and-forward holder (sans-IO).

A holder that waits out its retry backoff for a destination node learns of a heal far
away (a link in the middle of the path came back) from nothing it sees itself: no
neighbour came up and its own route did not change. So while messages wait for a node,
the holder sends it a small ``PROBE`` (a nonce in a signed mesh unicast) every
``interval_s``; the node answers ``PROBE_ACK`` with the nonce. An answer after a probe
that went unanswered means the node is reachable again: the held messages are tried at
once (one DELIVER per message, instead of one per message per backoff step).

A sign of a heal seen locally (the node came up as a neighbour, a route to it appeared)
sends a probe at once (:meth:`ReachProbes.urgent`), so only the node's own answer, which
an attacker cannot forge, makes the held messages go out again.

Bounds: at most :data:`MAX_PROBED_PER_ROUND` probes go out per round of ``interval_s``
(the least recently probed destinations first); state is kept only for destinations
still waited for.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from meshcomm.types import NodeId

PROBE_NONCE_BYTES: Final = 8
#: Destinations probed per round at most (each round is one probe interval).
MAX_PROBED_PER_ROUND: Final = 8
#: An urgent probe goes out at most this soon after the previous one to the same node.
MIN_PROBE_GAP_S: Final = 0.25


@dataclass(slots=True)
class _Probe:
    nonce: bytes
    sent_at: float
    answered: bool = False
    #: The last finished probe went unanswered (or none finished yet).
    silent: bool = True


class ReachProbes:
    """Which destinations to probe, and whether an answer means "reachable again"."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._probes: dict[NodeId, _Probe] = {}
        self._nonces = itertools.count(1)
        self._round_start = float("-inf")
        self._round_sent = 0

    def __len__(self) -> int:
        return len(self._probes)

    def due(self, wanted: Iterable[NodeId], now: float) -> list[tuple[NodeId, bytes]]:
        """The destinations to probe now, each with a fresh nonce; state of destinations
        no longer ``wanted`` is dropped."""
        wanted_set = set(wanted)
        for dst in [d for d in self._probes if d not in wanted_set]:
            del self._probes[dst]
        ready = [d for d in wanted_set if d not in self._probes
                 or now >= self._probes[d].sent_at + self.interval_s]
        ready.sort(key=lambda d: (self._probes[d].sent_at if d in self._probes
                                  else float("-inf"), d))
        if now >= self._round_start + self.interval_s:
            self._round_start, self._round_sent = now, 0
        budget = MAX_PROBED_PER_ROUND - self._round_sent
        return [(dst, self._new_probe(dst, now)) for dst in ready[:budget]]

    def urgent(self, dst: NodeId, now: float) -> bytes | None:
        """A sign that ``dst`` may be reachable again: the nonce of a probe to send now,
        or None (not waited for, probed within MIN_PROBE_GAP_S, or the round's budget
        spent)."""
        probe = self._probes.get(dst)
        if (probe is None or now < probe.sent_at + MIN_PROBE_GAP_S
                or self._round_sent >= MAX_PROBED_PER_ROUND):
            return None
        return self._new_probe(dst, now)

    def _new_probe(self, dst: NodeId, now: float) -> bytes:
        nonce = next(self._nonces).to_bytes(PROBE_NONCE_BYTES, "big")
        old = self._probes.get(dst)
        self._probes[dst] = _Probe(nonce, now, silent=old is None or not old.answered)
        self._round_sent += 1
        return nonce

    def next_due(self) -> float | None:
        """When the next probe of a tracked destination is due (None: none tracked)."""
        due = min((p.sent_at + self.interval_s for p in self._probes.values()), default=None)
        if due is not None and self._round_sent >= MAX_PROBED_PER_ROUND:
            return max(due, self._round_start + self.interval_s)
        return due

    def answered(self, dst: NodeId, nonce: bytes) -> bool:
        """A PROBE_ACK from ``dst`` (the envelope's verified origin). True when it answers
        our current probe after one went unanswered: the node is reachable again."""
        probe = self._probes.get(dst)
        if probe is None or probe.answered or probe.nonce != nonce:
            return False
        probe.answered = True
        was_silent, probe.silent = probe.silent, False
        return was_silent
