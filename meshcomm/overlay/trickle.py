"""Trickle timers (RFC 6206): quiet while neighbours agree, fast the moment they do not.

One :class:`Trickle` drives one periodic control message (the overlay's HELLO beacons,
its anti-entropy DIGESTs). RFC 6206 section 4.2, with this module's names:

1. An interval of length ``interval_s`` starts; the transmission time is drawn uniformly
   from its second half, ``[I/2, I)``, and the counter of consistent messages heard
   (``counter``, RFC's ``c``) is 0.
2. Each consistent message heard in the interval: ``counter += 1``
   (:meth:`Trickle.heard_consistent`).
3. At the transmission time the message is sent unless ``counter >= k`` (redundancy
   constant; ``k = 0`` here means infinity: never suppressed, as a beacon must not be)
   -- and, an addition, unless an inconsistency was heard in this interval: a node that
   heard a neighbour differ must speak even when others agree with it (its digest is
   what the differing neighbour answers; anti-entropy needs both sides' digests).
4. At the end of the interval the next one is twice as long, at most ``imax_s`` (an
   addition: not when an inconsistency was heard in it, nor for ``hold_intervals``
   intervals after that -- a node stays at ``imin_s`` while its neighbours differ and a
   little longer, so one lost message after a change costs one Imin, not a doubled wait;
   RFC 6206 assumes a shared broadcast domain, a multi-hop chain is not one).
5. An inconsistency heard while the interval is longer than ``imin_s`` starts a new
   interval of ``imin_s`` at once (:meth:`Trickle.inconsistent`); at ``imin_s`` it does
   nothing, so however many inconsistencies a neighbour makes up, the message is sent no
   more often than at ``imin_s`` -- the fixed rate the overlay used before Trickle.

Two additions of this module (both keep that worst case):

* ``first_within_s``: the very first transmission goes out within this delay instead of
  in ``[Imin/2, Imin)`` (a node's first HELLO at power-on, as before Trickle).
* ``min_gap_s``: two transmissions are never closer than this; an *urgent* reset
  (:meth:`Trickle.inconsistent` with ``urgent=True``, e.g. a new neighbour heard) sends
  as soon as that gap allows instead of in ``[Imin/2, Imin)``, so discovery is no slower
  than with fixed beacons.

The class is sans-IO: its owner asks :meth:`Trickle.next_at` when to be woken and calls
:meth:`Trickle.due` then; each change of that deadline bumps :attr:`Trickle.generation`,
so a timer armed for an older deadline is recognised (:meth:`Trickle.timer_key`) and
ignored.
"""

from __future__ import annotations

import random
from enum import Enum, StrEnum
from typing import Final

from meshcomm.errors import LocalProtocolError

#: The longest interval any Trickle timer may reach (also the wire bound of an advertised
#: beacon interval, see meshcomm.overlay.witness).
MAX_INTERVAL_S: Final = 3600.0
#: Doublings of Imin allowed at most (RFC 6206: Imax is given as a number of doublings).
MAX_DOUBLINGS: Final = 16
#: Intervals kept at Imin after the last one in which an inconsistency was heard.
HOLD_INTERVALS: Final = 2
#: An urgent transmission goes out after a random delay in this range (s), gap allowing.
URGENT_DELAY_S: Final = (0.01, 0.1)
_KEY_PREFIX: Final = b"tk"


class TrickleCounter(StrEnum):
    """The overlay's counters of its Trickle timers."""

    HELLO_RESETS = "trickle_hello_resets"      # HELLO interval back to Imin
    DIGEST_RESETS = "trickle_digest_resets"    # digest interval back to Imin
    DIGEST_SUPPRESSED = "trickle_digest_suppressed"  # k equal digests heard: not sent


class Fired(Enum):
    """What :meth:`Trickle.due` decided."""

    NOTHING = "nothing"        # woken early, or at the end of an interval
    TRANSMIT = "transmit"      # send the message now
    SUPPRESSED = "suppressed"  # k consistent messages were heard: stay silent


class Trickle:
    """One Trickle timer (see the module docstring)."""

    __slots__ = (
        "_differs",
        "_hold",
        "_inconsistent",
        "_pending",
        "counter",
        "fire_at",
        "generation",
        "hold_intervals",
        "imax_s",
        "imin_s",
        "interval_s",
        "k",
        "last_tx",
        "min_gap_s",
        "resets",
        "rng",
        "started_at",
    )

    def __init__(self, imin_s: float, doublings: int, k: int, rng: random.Random, now: float,
                 *, first_within_s: float | None = None, min_gap_s: float = 0.0,
                 hold_intervals: int = HOLD_INTERVALS) -> None:
        if not 0 < imin_s <= MAX_INTERVAL_S or not 0 <= doublings <= MAX_DOUBLINGS:
            raise LocalProtocolError("trickle: imin_s in (0, 3600], doublings in 0..16")
        if k < 0 or min_gap_s < 0 or min_gap_s > imin_s:
            raise LocalProtocolError("trickle: k >= 0 and 0 <= min_gap_s <= imin_s")
        self.imin_s = imin_s
        self.imax_s = min(MAX_INTERVAL_S, imin_s * (1 << doublings))
        self.k = k
        self.rng = rng
        self.min_gap_s = min_gap_s
        self.interval_s = imin_s
        self.counter = 0
        self.generation = 0
        self.resets = 0
        self.last_tx = -1e18
        self.started_at = now
        self.fire_at = now
        self._pending = True
        self._differs = False
        self._inconsistent = False
        self.hold_intervals = hold_intervals
        self._hold = hold_intervals
        self._begin(now, None if first_within_s is None
                    else now + rng.uniform(0, first_within_s))

    # ------------------------------------------------------------ the owner's side
    def next_at(self) -> float:
        """When the owner must call :meth:`due` next."""
        return self.fire_at if self._pending else self.started_at + self.interval_s

    def timer_key(self) -> bytes:
        """Key for the owner's timer entry: entries with an older key are stale."""
        return _KEY_PREFIX + self.generation.to_bytes(8, "big")

    def is_current(self, key: bytes) -> bool:
        return key == self.timer_key()

    def due(self, now: float) -> Fired:
        """Advance to ``now``: transmit (or suppress) at the transmission time, start the
        next, doubled interval at the end of this one."""
        if self._pending and now >= self.fire_at:
            self._pending = False
            self.generation += 1
            if self.k and self.counter >= self.k and not self._differs:
                return Fired.SUPPRESSED
            self.last_tx = now
            return Fired.TRANSMIT
        if not self._pending and now >= self.started_at + self.interval_s:
            end = self.started_at + self.interval_s
            if self._inconsistent:      # still inconsistent: stay at this length
                self._hold = self.hold_intervals
            elif self._hold > 0:
                self._hold -= 1
            else:
                self.interval_s = min(self.interval_s * 2, self.imax_s)
            self._begin(end, None)
        return Fired.NOTHING

    def heard_consistent(self) -> None:
        self.counter += 1

    def inconsistent(self, now: float, *, urgent: bool = False, local: bool = False,
                     delay_s: tuple[float, float] = URGENT_DELAY_S) -> bool:
        """An inconsistency was heard: back to ``imin_s`` (RFC 6206 rule 6). Returns True
        when the deadline changed (the owner arms a timer for :meth:`next_at`). At
        ``imin_s`` nothing changes, unless ``urgent``: then a transmission comes as soon
        as the minimum gap allows (one more in this interval if its own was made; never
        closer than ``min_gap_s`` to the last). Unless ``local`` (our own state changed:
        neighbours that already agree with it make ours redundant), this interval's
        transmission is no longer suppressed: a neighbour differs from us."""
        changed = False
        if self.interval_s > self.imin_s:
            self.interval_s = self.imin_s
            self.resets += 1
            self._begin(now, self._urgent_at(now, delay_s) if urgent else None)
            changed = True
        elif urgent:        # this interval's transmission now (or again), gap allowing
            at = self._urgent_at(now, delay_s)
            if not self._pending or at < self.fire_at:
                self.fire_at = at
                self._pending = True
                self.generation += 1
                changed = True
        self._inconsistent = True
        self._differs = self._differs or not local
        return changed

    def bound_s(self) -> float:
        """The longest this timer may take until its *next* transmission after the one
        being made now: the rest of this interval plus the next, at most 1.5 x the
        returned value (what a HELLO advertises, see meshcomm.overlay.neighbours)."""
        return min(self.interval_s * 2, self.imax_s)

    # ------------------------------------------------------------ internals
    def _urgent_at(self, now: float, delay_s: tuple[float, float]) -> float:
        return max(now + self.rng.uniform(*delay_s), self.last_tx + self.min_gap_s)

    def _begin(self, now: float, fire_at: float | None) -> None:
        """RFC 6206 rule 2: a new interval starting ``now``."""
        self.started_at = now
        self.counter = 0
        self._differs = False
        self._inconsistent = False
        half = self.interval_s / 2
        at = now + half + self.rng.uniform(0, half) if fire_at is None else fire_at
        self.fire_at = max(at, self.last_tx + self.min_gap_s)
        self._pending = True
        self.generation += 1


class Beacon:
    """A periodic control message's timer: a :class:`Trickle` timer, or (``trickle``
    off) the fixed period of before, ``interval_s`` jittered by ``jitter`` either way.

    The first transmission comes after a random delay in ``first_s`` (offsets from now).
    Timer entries carry :meth:`timer_key`; one whose key is not current is stale."""

    __slots__ = ("_fixed_key", "_fixed_next", "interval_s", "jitter", "rng", "trickle")

    def __init__(self, interval_s: float, rng: random.Random, now: float, *,
                 trickle: bool, doublings: int = 0, k: int = 0, jitter: float = 0.25,
                 first_s: tuple[float, float] = (0.0, 0.0), min_gap_s: float = 0.0) -> None:
        self.interval_s = interval_s
        self.jitter = jitter
        self.rng = rng
        self.trickle: Trickle | None = None
        self._fixed_next = now + rng.uniform(*first_s)
        self._fixed_key = b"fixed"
        if trickle:
            self.trickle = Trickle(interval_s, doublings, k, rng, now, min_gap_s=min_gap_s)
            self.trickle.fire_at = self._fixed_next   # the first one as before Trickle

    def next_at(self) -> float:
        return self._fixed_next if self.trickle is None else self.trickle.next_at()

    def timer_key(self) -> bytes:
        return self._fixed_key if self.trickle is None else self.trickle.timer_key()

    def is_current(self, key: bytes) -> bool:
        return key == self.timer_key()

    def due(self, now: float) -> Fired:
        if self.trickle is not None:
            return self.trickle.due(now)
        if now < self._fixed_next:
            return Fired.NOTHING
        j = self.jitter
        self._fixed_next = now + self.interval_s * self.rng.uniform(1 - j, 1 + j)
        return Fired.TRANSMIT

    def heard_consistent(self) -> None:
        if self.trickle is not None:
            self.trickle.heard_consistent()

    def inconsistent(self, now: float, *, urgent: bool = False, local: bool = False,
                     delay_s: tuple[float, float] = URGENT_DELAY_S) -> bool:
        """See :meth:`Trickle.inconsistent` (fixed periods: nothing changes)."""
        return self.trickle is not None and self.trickle.inconsistent(
            now, urgent=urgent, local=local, delay_s=delay_s)

    def announced_s(self) -> float | None:
        """The interval to announce with the message now (None: fixed, announce none)."""
        return None if self.trickle is None else self.trickle.bound_s()

    @property
    def current_s(self) -> float:
        """The current interval (the fixed period when Trickle is off)."""
        return self.interval_s if self.trickle is None else self.trickle.interval_s
