"""Standing of the records in a bounded binding table, and whom to evict when it is full.

Every record has a tier; a full table makes room for a newcomer only by evicting a record
of a tier the newcomer may displace, lowest tier first:

========================  =====================================================  ==========
tier                      what                                                   evicted by
========================  =====================================================  ==========
``SURGE``                 a newcomer (admitted less than ``PROBATION_S`` ago)    anyone
                          that arrived during a surge of newcomers (more than
                          ``SURGE_NEWCOMERS`` in ``SURGE_WINDOW_S``)
``PROBATION``             a newcomer that arrived in calm                        anyone
``ESTABLISHED``           stood its probation; evicted only when its origin is   anyone
                          unreachable (no live route, not a neighbour), oldest
                          refresh first, skipping reachable ones (second chance)
``TOMBSTONE``             a de-registration of a record we held                  credentialed
``CREDENTIALED``          a valid agency credential vouched for it               own
``OWN``                   signed by this node's own key                          never
========================  =====================================================  ==========

A newcomer that finds nothing it may displace is refused (``table_full``): a flood of fresh
keys churns among the newcomers and cannot push out what honest operation needs, not even
the records of handsets that registered shortly before the flood began (they arrived in
calm and go only after every surge arrival). Inside a
tier the order is insertion order (a refresh moves a record to the back), so victims are
found in O(1) amortised: each promotion out of probation happens once per record, and the
reachability scan is bounded by ``MAX_SECOND_CHANCES``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

#: A newcomer stands on probation this long before it counts as established.
PROBATION_S = 60.0
#: Reachable established records skipped (moved to the back) per eviction, at most.
MAX_SECOND_CHANCES = 8
#: More newcomers than this within one window (or the one before) make a surge.
SURGE_NEWCOMERS = 20
SURGE_WINDOW_S = 5.0


class Tier(IntEnum):
    SURGE = 0
    PROBATION = 1
    ESTABLISHED = 2
    TOMBSTONE = 3
    CREDENTIALED = 4
    OWN = 5


NEWCOMER_TIERS = (Tier.SURGE, Tier.PROBATION)

#: Tiers a newcomer of a tier may evict from, in the order they are tried.
_MAY_EVICT: dict[Tier, tuple[Tier, ...]] = {
    Tier.SURGE: (*NEWCOMER_TIERS, Tier.ESTABLISHED),
    Tier.PROBATION: (*NEWCOMER_TIERS, Tier.ESTABLISHED),
    Tier.ESTABLISHED: (*NEWCOMER_TIERS, Tier.ESTABLISHED),
    Tier.TOMBSTONE: (*NEWCOMER_TIERS, Tier.ESTABLISHED),
    Tier.CREDENTIALED: (*NEWCOMER_TIERS, Tier.ESTABLISHED, Tier.TOMBSTONE),
    Tier.OWN: (*NEWCOMER_TIERS, Tier.ESTABLISHED, Tier.TOMBSTONE, Tier.CREDENTIALED),
}


class StandingIndex:
    """Record ids per tier, in insertion order; finds eviction victims.

    ``admitted_at(rid)`` gives when a record was first admitted (for promotion),
    ``reachable(rid)`` whether its origin has a live route or is a neighbour, and
    ``adjacent(rid)`` whether its origin is a neighbour (a newcomer next to us gets a second
    chance); all are supplied by the table that owns the records.
    """

    def __init__(self, admitted_at: Callable[[bytes], float],
                 reachable: Callable[[bytes, float], bool],
                 adjacent: Callable[[bytes], bool] = lambda _rid: False,
                 probation_s: float = PROBATION_S) -> None:
        self._tiers: list[dict[bytes, None]] = [{} for _ in Tier]
        self._tier_of: dict[bytes, Tier] = {}
        self._admitted_at = admitted_at
        self._reachable = reachable
        self._adjacent = adjacent
        self.probation_s = probation_s
        self._window_start = -SURGE_WINDOW_S
        self._in_window = 0
        self._in_previous = 0

    def __len__(self) -> int:
        return len(self._tier_of)

    def tier(self, rid: bytes) -> Tier | None:
        return self._tier_of.get(rid)

    def count(self, tier: Tier) -> int:
        return len(self._tiers[tier])

    def newcomer_tier(self, now: float) -> Tier:
        """Tier of a record new to the table arriving now (counts the arrival)."""
        if now - self._window_start >= SURGE_WINDOW_S:
            recent = now - self._window_start < 2 * SURGE_WINDOW_S
            self._in_previous = self._in_window if recent else 0
            self._in_window = 0
            self._window_start = now
        self._in_window += 1
        if max(self._in_window, self._in_previous) > SURGE_NEWCOMERS:
            return Tier.SURGE
        return Tier.PROBATION

    def place(self, rid: bytes, tier: Tier) -> None:
        """Put (or move) ``rid`` at the back of ``tier``."""
        old = self._tier_of.get(rid)
        if old is not None:
            del self._tiers[old][rid]
        self._tiers[tier][rid] = None
        self._tier_of[rid] = tier

    def discard(self, rid: bytes) -> None:
        old = self._tier_of.pop(rid, None)
        if old is not None:
            del self._tiers[old][rid]

    def victim(self, newcomer: Tier, now: float) -> bytes | None:
        """A record a newcomer of tier ``newcomer`` may displace, or None."""
        for tier in _MAY_EVICT[newcomer]:
            if tier in NEWCOMER_TIERS:
                found = self._probation_victim(tier, now)
            elif tier is Tier.ESTABLISHED:
                found = self._established_victim(now, strict=newcomer < Tier.CREDENTIALED)
            else:
                found = next(iter(self._tiers[tier]), None)
            if found is not None:
                return found
        return None

    def _probation_victim(self, tier: Tier, now: float) -> bytes | None:
        """Oldest newcomer of ``tier`` still on probation (those past it are promoted on
        the way)."""
        probation = self._tiers[tier]
        chances = MAX_SECOND_CHANCES
        while probation:
            rid = next(iter(probation))
            if now - self._admitted_at(rid) >= self.probation_s:
                self.place(rid, Tier.ESTABLISHED)
            elif chances > 0 and len(probation) > 1 and self._adjacent(rid):
                chances -= 1
                self.place(rid, tier)  # a neighbour's own record: to the back
            else:
                return rid
        return None

    def _established_victim(self, now: float, strict: bool) -> bytes | None:
        """Oldest-refreshed established record whose origin is unreachable; reachable ones
        get a second chance (moved to the back). ``strict``: if every record scanned is
        reachable there is no victim; otherwise the oldest one goes."""
        established = self._tiers[Tier.ESTABLISHED]
        for _ in range(min(MAX_SECOND_CHANCES, len(established))):
            rid = next(iter(established))
            if not self._reachable(rid, now):
                return rid
            self.place(rid, Tier.ESTABLISHED)
        if strict or not established:
            return None
        return next(iter(established))
