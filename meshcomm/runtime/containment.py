"""Containment of one failing step of the node driver's pump.

A bug (or an input no check foresaw) that raises inside one step of the pump -- the core
taking an input, one event's consumer, one transmit, the local SIP sink -- must not stop
the rest: the next event, the transmit and the re-arming of the timer still run, so no
answer waits for the next input. Each contained failure is counted (``contained_faults``
and per kind), journaled as ``node.fault`` and logged: the first of each kind (step and
exception type) with its traceback, then at most every :data:`FAULT_LOG_INTERVAL_S` one
line with the count. The journal record is rate-limited the same way, so a flood of one
bad input cannot flood the log or the journal.

Usage (guards are cached per step, nothing is allocated on the hot path)::

    faults = Containment(counters, clock=loop.time, journal=record_sink)
    with faults.step("transmit"):
        radio.send(...)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from types import TracebackType
from typing import Final

from meshcomm.journal.events import JournalRecord
from meshcomm.journal.payloads import NodeFault
from meshcomm.runtime.counters import RuntimeCounter

log = logging.getLogger(__name__)

#: A kind of contained failure is logged (and journaled) again at most this often.
FAULT_LOG_INTERVAL_S: Final = 10.0
#: Distinct kinds (step, exception type) remembered; beyond, they share one slot.
MAX_FAULT_KINDS: Final = 64
#: The kind further kinds are counted under once MAX_FAULT_KINDS are known.
OTHER_KIND: Final = "other"

JournalSink = Callable[[JournalRecord, float], None]


class _Kind:
    __slots__ = ("count", "logged_at", "unreported")

    def __init__(self) -> None:
        self.count = 0
        self.unreported = 0
        self.logged_at = float("-inf")


class Containment:
    """Counts, journals and logs contained failures (see the module docstring)."""

    def __init__(self, counters: MutableMapping[str, int], *, clock: Callable[[], float],
                 journal: JournalSink | None = None) -> None:
        self.counters = counters
        self.clock = clock
        self.journal = journal
        self.kinds: dict[str, _Kind] = {}
        self._guards: dict[str, _Guard] = {}
        counters.setdefault(RuntimeCounter.CONTAINED_FAULTS, 0)

    def step(self, name: str) -> _Guard:
        """A context manager containing an Exception raised inside it as step ``name``."""
        guard = self._guards.get(name)
        if guard is None:
            guard = self._guards[name] = _Guard(self, name)
        return guard

    def contain(self, step: str, exc: BaseException) -> None:
        """Count, journal and log (rate-limited per kind) one contained failure."""
        now = self.clock()
        self.counters[RuntimeCounter.CONTAINED_FAULTS] += 1
        name = f"{step}:{type(exc).__name__}"
        kind = self.kinds.get(name)
        if kind is None:
            if len(self.kinds) >= MAX_FAULT_KINDS:
                name = OTHER_KIND
                kind = self.kinds.setdefault(OTHER_KIND, _Kind())
            else:
                kind = self.kinds[name] = _Kind()
        kind.count += 1
        kind.unreported += 1
        if now - kind.logged_at < FAULT_LOG_INTERVAL_S:
            return
        first = kind.logged_at == float("-inf")
        kind.logged_at = now
        count, kind.unreported = kind.unreported, 0
        if first:
            log.error("contained a failure in %s (the node keeps running): %r", step, exc,
                      exc_info=exc)
        else:
            log.error("contained %d more failure(s) %s in the last %.0f s: %r", count, name,
                      FAULT_LOG_INTERVAL_S, exc)
        if self.journal is not None:
            try:
                self.journal(JournalRecord.of(NodeFault(
                    step=step, error=type(exc).__name__, count=count, total=kind.count)), now)
            except Exception:  # the journal itself failing is counted only
                self.counters[RuntimeCounter.CONTAINED_JOURNAL_ERRORS] = (
                    self.counters.get(RuntimeCounter.CONTAINED_JOURNAL_ERRORS, 0) + 1)

    def total(self) -> int:
        return sum(kind.count for kind in self.kinds.values())


class _Guard:
    __slots__ = ("name", "owner")

    def __init__(self, owner: Containment, name: str) -> None:
        self.owner = owner
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False             # nothing raised, or a BaseException (cancellation)
        self.owner.contain(self.name, exc)
        return True
