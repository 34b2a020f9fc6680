"""The destination's record of delivered requests (exactly once, end to end; sans-IO).

A node remembers the id (``message_id``: Call-ID, From tag, CSeq) of every MESSAGE it
delivered to a local client, whichever path brought it (direct over the mesh, a
retransmission, store-and-forward from the origin or from a relay), so a later copy is
answered without a second delivery. The store-and-forward core owns the log and persists
it (``SfPersist`` DELIVERED / FORGET, applied before the success answer leaves).

Bounds: at most ``max_ids`` records, each kept ``keep_s`` (wall clock). When full, the
record evicted is the oldest of the origin node holding the most records (among equals,
the one that reached that count first): one sender that floods a client can only push
out its own records, never an honest sender's. Eviction is O(1) (origins are kept in
buckets by their record count), so a flood from many fresh origins costs no more per
delivery than one from a single origin.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: Origin key of a request that did not come over the mesh (a local client's).
LOCAL_ORIGIN = b""


@dataclass(frozen=True, slots=True)
class DeliveredRecord:
    """``msg_id`` was delivered here at ``wall_s``; it came from node ``origin``."""

    msg_id: bytes
    wall_s: float
    origin: bytes = LOCAL_ORIGIN


class DeliveredLog:
    """Bounded set of delivered ids with per-origin fair eviction (see module doc)."""

    def __init__(self, max_ids: int, keep_s: float,
                 records: Iterable[DeliveredRecord] = ()) -> None:
        self.max_ids = max_ids
        self.keep_s = keep_s
        self._records: dict[bytes, DeliveredRecord] = {}
        self._by_origin: dict[bytes, OrderedDict[bytes, None]] = {}
        #: record count -> origins with that many records (in the order they got there)
        self._by_count: dict[int, dict[bytes, None]] = {}
        self._max_count = 0
        for record in sorted(records, key=lambda r: r.wall_s):
            self.add(record)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[DeliveredRecord]:
        return iter(list(self._records.values()))

    def get(self, msg_id: bytes) -> DeliveredRecord | None:
        return self._records.get(msg_id)

    def add(self, record: DeliveredRecord) -> list[bytes]:
        """Remember ``record`` (no-op if known); returns the ids evicted to make room."""
        if record.msg_id in self._records or self.max_ids <= 0:
            return []
        evicted: list[bytes] = []
        while len(self._records) >= self.max_ids:
            evicted.append(self._evict_one())
        self._records[record.msg_id] = record
        ids = self._by_origin.setdefault(record.origin, OrderedDict())
        ids[record.msg_id] = None
        self._recount(record.origin, len(ids) - 1, len(ids))
        return evicted

    def prune(self, wall_now: float) -> list[bytes]:
        """Forget records older than ``keep_s``; returns their ids."""
        horizon = wall_now - self.keep_s
        old = [m for m, r in self._records.items() if r.wall_s < horizon]
        for msg_id in old:
            self._remove(msg_id)
        return old

    def _evict_one(self) -> bytes:
        """The oldest record of an origin with the most records."""
        origin = next(iter(self._by_count[self._max_count]))
        msg_id = next(iter(self._by_origin[origin]))
        self._remove(msg_id)
        return msg_id

    def _remove(self, msg_id: bytes) -> None:
        record = self._records.pop(msg_id)
        ids = self._by_origin[record.origin]
        del ids[msg_id]
        self._recount(record.origin, len(ids) + 1, len(ids))
        if not ids:
            del self._by_origin[record.origin]

    def _recount(self, origin: bytes, old: int, new: int) -> None:
        """Move ``origin`` from the bucket of ``old`` records to that of ``new``."""
        if old:
            bucket = self._by_count[old]
            del bucket[origin]
            if not bucket:
                del self._by_count[old]
        if new:
            self._by_count.setdefault(new, {})[origin] = None
        if new > self._max_count:
            self._max_count = new
        while self._max_count and self._max_count not in self._by_count:
            self._max_count -= 1
