"""A deadline heap with lazy invalidation (sans-IO): at most one live deadline per key,
the earliest in O(1) amortised, the due ones in O(due · log n).

Rescheduling or dropping a key does not search the heap: the old entry stays in it and
is *stale* (its sequence number is no longer the key's live one); stale entries are
skipped and popped when they reach the top, and the heap is rebuilt from the live
deadlines once the stale ones outnumber the live ones (and :data:`COMPACT_MIN_STALE`), so
churn cannot grow it without bound: its size stays below ``2 * live + COMPACT_MIN_STALE``.

:attr:`DeadlineHeap.work` counts the heap entries pushed, popped or looked at; tests use it
to show the cost per call does not grow with the number of keys.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: Stale entries tolerated before a rebuild whatever the live count (small heaps).
COMPACT_MIN_STALE = 64


class DeadlineHeap(Generic[K]):
    """Deadlines by key: :meth:`schedule`, :meth:`next_time`, :meth:`pop_due`."""

    def __init__(self) -> None:
        #: (deadline, seq, key): seq is unique, so keys are never compared.
        self._heap: list[tuple[float, int, K]] = []
        #: key -> (deadline, seq) of its live entry.
        self._live: dict[K, tuple[float, int]] = {}
        self._seq = itertools.count()
        #: Heap entries pushed, popped or peeked at (a cost counter for tests and benches).
        self.work = 0

    def __len__(self) -> int:
        """Keys with a live deadline."""
        return len(self._live)

    @property
    def heap_size(self) -> int:
        """Entries in the heap, live and stale (bounded, see the module docstring)."""
        return len(self._heap)

    @property
    def stale(self) -> int:
        """Entries in the heap that are no key's live deadline (each key has one entry)."""
        return len(self._heap) - len(self._live)

    def deadline_of(self, key: K) -> float | None:
        live = self._live.get(key)
        return None if live is None else live[0]

    def schedule(self, key: K, when: float | None) -> None:
        """``key`` is due at ``when`` (None: never), replacing its earlier deadline."""
        live = self._live.get(key)
        if live is not None and live[0] == when:
            return
        if live is not None:
            del self._live[key]             # its entry in the heap is stale from now on
        if when is not None:
            seq = next(self._seq)
            self._live[key] = (when, seq)
            heapq.heappush(self._heap, (when, seq, key))
            self.work += 1
        if self.stale > max(COMPACT_MIN_STALE, len(self._live)):
            self._compact()

    def discard(self, key: K) -> None:
        self.schedule(key, None)

    def next_time(self) -> float | None:
        """The earliest live deadline (stale tops are popped on the way)."""
        heap = self._heap
        while heap:
            self.work += 1
            when, seq, key = heap[0]
            live = self._live.get(key)
            if live is not None and live[1] == seq:
                return when
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[K]:
        """The keys due at ``now`` (earliest first); they no longer have a deadline."""
        heap = self._heap
        due: list[K] = []
        while heap and heap[0][0] <= now:
            self.work += 1
            _, seq, key = heapq.heappop(heap)
            live = self._live.get(key)
            if live is not None and live[1] == seq:
                del self._live[key]
                due.append(key)
        return due

    def _compact(self) -> None:
        self.work += len(self._live)
        self._heap = [(when, seq, key) for key, (when, seq) in self._live.items()]
        heapq.heapify(self._heap)
