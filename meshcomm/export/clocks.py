"""Clock offsets of devices from the messages they exchanged (issue 11, sans-IO).

Every device stamps its journal with its own wall clock. A message journaled as sent by
device S at ``send`` (S's clock) and as received by device R at ``recv`` (R's clock)
bounds their clocks' difference: with ``offset(D)`` = D's clock minus true time and a
transit time >= 0, ``offset(R) - offset(S) <= recv - send``. The smallest such value over
S's messages to R, ``U(S, R)``, and over R's to S, ``U(R, S)``, give the classic NTP
estimate of the pair: ``(U(S, R) - U(R, S)) / 2``, uncertain by ``(U(S, R) + U(R, S)) / 2``
(half the smallest round trip).

:func:`estimate_offsets` makes one consistent set of offsets:

1. each device's offset relative to the reference device is the sum of the pair estimates
   along the path of least uncertainty (a shortest-path tree over the pairs, weighed by
   their uncertainties); its uncertainty is the sum along that path;
2. then every bound is enforced: relaxing ``offset(R) <= offset(S) + U(S, R)`` until
   nothing changes (Bellman-Ford from the estimates) gives the largest offsets not above
   the estimates that satisfy every bound, so that no receipt, corrected, precedes its
   send. Bounds that contradict each other (a cycle whose bounds sum below zero: a clock
   stepped, or a journal lies) are reported, and the estimates are kept unenforced.

Devices that exchanged nothing with the reference's component get no offset (None).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Exchange:
    """One message seen at both ends: ``send`` on the sender's clock, ``recv`` on the
    receiver's (seconds)."""

    sender: str
    receiver: str
    send: float
    recv: float


@dataclass(frozen=True, slots=True)
class Offset:
    """A device's clock minus the reference's, and how far off the estimate may be."""

    offset_s: float
    uncertainty_s: float


@dataclass(frozen=True, slots=True)
class ClockEstimate:
    reference: str
    offsets: dict[str, Offset]
    #: The bounds could not all hold (a stepped clock or a lying journal): the offsets are
    #: the path estimates, and corrected times may put a receipt before its send.
    consistent: bool

    def corrected(self, device: str, wall_s: float) -> float | None:
        """``wall_s`` on ``device``'s clock as the reference's clock would have read."""
        found = self.offsets.get(device)
        return None if found is None else wall_s - found.offset_s


def pair_bounds(exchanges: Iterable[Exchange]) -> dict[tuple[str, str], float]:
    """``U(S, R)``: the least ``recv - send`` of S's messages to R, per directed pair."""
    bounds: dict[tuple[str, str], float] = {}
    for ex in exchanges:
        if ex.sender == ex.receiver:
            continue
        key = (ex.sender, ex.receiver)
        gap = ex.recv - ex.send
        if key not in bounds or gap < bounds[key]:
            bounds[key] = gap
    return bounds


def estimate_offsets(exchanges: Iterable[Exchange], reference: str) -> ClockEstimate:
    """See the module docstring."""
    bounds = pair_bounds(exchanges)
    estimate = _path_estimates(bounds, reference)
    offsets = {d: o.offset_s for d, o in estimate.items()}
    consistent = _enforce(offsets, bounds)
    if not consistent:
        offsets = {d: o.offset_s for d, o in estimate.items()}
    return ClockEstimate(reference, {d: Offset(offsets[d], estimate[d].uncertainty_s)
                                     for d in estimate}, consistent)


def _path_estimates(bounds: dict[tuple[str, str], float],
                    reference: str) -> dict[str, Offset]:
    """Pair estimates summed along the least uncertain paths from ``reference`` (pairs
    seen one way only are used with the one bound, uncertain by it)."""
    edges: dict[str, list[tuple[str, float, float]]] = {}
    for (s, r), up in bounds.items():
        down = bounds.get((r, s))
        if down is not None:
            mid, spread = (up - down) / 2.0, (up + down) / 2.0
        else:
            mid, spread = up, abs(up)
        edges.setdefault(s, []).append((r, mid, max(spread, 0.0)))
        if down is None:
            edges.setdefault(r, []).append((s, -mid, max(spread, 0.0)))
    found: dict[str, Offset] = {}
    heap: list[tuple[float, str, float]] = [(0.0, reference, 0.0)]
    while heap:
        spread, device, offset = heapq.heappop(heap)
        if device in found:
            continue
        found[device] = Offset(offset, spread)
        for nxt, mid, pair_spread in edges.get(device, ()):
            if nxt not in found:
                heapq.heappush(heap, (spread + pair_spread, nxt, offset + mid))
    return found


def _enforce(offsets: dict[str, float], bounds: dict[tuple[str, str], float]) -> bool:
    """Lower offsets until ``offset(R) <= offset(S) + U(S, R)`` holds for every pair of
    known devices (in place); False when the bounds contradict each other."""
    edges = [(s, r, up) for (s, r), up in bounds.items() if s in offsets and r in offsets]
    for _ in range(len(offsets) + 1):
        changed = False
        for s, r, up in edges:
            limit = offsets[s] + up
            if offsets[r] > limit:
                offsets[r] = limit
                changed = True
        if not changed:
            return True
    return False
