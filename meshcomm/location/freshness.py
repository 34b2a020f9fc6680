"""Freshness memory: the highest sequence ever accepted per (AoR, key), sans-IO.

A binding and its tombstone leave the table when their time is up, and a restarted node
starts with an empty table and duplicate cache. Without a memory of what was accepted, an
old binding replayed after that point would be new again (a departed responder would
reappear). This memory keeps, per record id (:func:`~meshcomm.location.binding.record_id_of`):

* ``seq``: the highest sequence accepted; the table refuses anything older (a stale replay);
* ``first_wall``: our wall clock when that sequence was first accepted, so a later copy of
  the same sequence cannot live past ``first_wall + life`` whatever age a relay reports;
* ``keep_until_wall``: the entry is kept at least :data:`FRESHNESS_RETENTION_S` after its last
  update (the longest lifetime plus the longest hold a binding may claim, plus clock skew):
  after that, any copy of an older sequence is refused by its signed issue time anyway;
* ``standing``: what the eviction rule favours (see :class:`Standing`).

The memory is bounded (:data:`MAX_FRESHNESS_ENTRIES`). When full, it first drops entries
whose time is up, then evicts the oldest entry of the lowest standing: an outsider's flood
of fresh keys (each seen once, without a credential) only evicts its own kind, never an
entry of a key that refreshed or withdrew its binding, carried a credential, or is ours.

Changes are collected for the persistence adapter (:mod:`meshcomm.node.freshness_store`):
the runtime takes them with :meth:`FreshnessMemory.take_updates` and writes them durably
before it transmits anything (a re-flooded binding is remembered before it leaves), and
passes the stored entries back to :meth:`FreshnessMemory.restore` after a restart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from meshcomm.location.binding import CLOCK_SKEW_TOLERANCE_S, Binding
from meshcomm.wire import limits

#: Entries kept at most (about 200 bytes each in memory, 40 on disk).
MAX_FRESHNESS_ENTRIES: Final = 16384
#: An entry is kept this long after its last update: a binding's lifetime plus a tombstone's
#: hold (each at most MAX_LIFETIME_S), plus the clock skew allowed on both.
FRESHNESS_RETENTION_S: Final = 2 * limits.MAX_LIFETIME_S + 2 * CLOCK_SKEW_TOLERANCE_S


class Standing(IntEnum):
    """Eviction classes, lowest evicted first (oldest first within a class)."""

    #: One sequence seen, no credential: what a flood of fresh keys looks like.
    TRANSIENT = 0
    #: A second sequence of the same (AoR, key) was accepted: the key refreshed its binding
    #: or withdrew it (a departure), as honest handsets do.
    ESTABLISHED = 1
    #: A valid agency credential vouched for one of its bindings.
    CREDENTIALED = 2
    #: Signed by this node's own key.
    OWN = 3


@dataclass(frozen=True, slots=True)
class FreshEntry:
    record_id: bytes
    seq: int
    first_wall: float
    keep_until_wall: float
    standing: Standing


@dataclass(frozen=True, slots=True)
class FreshnessUpdates:
    """What changed since the last :meth:`FreshnessMemory.take_updates`."""

    upserts: tuple[FreshEntry, ...]
    removals: tuple[bytes, ...]

    def __bool__(self) -> bool:
        return bool(self.upserts or self.removals)


#: What :meth:`FreshnessMemory.take_updates` returns when nothing changed (shared: the
#: pump asks after every input).
NO_UPDATES = FreshnessUpdates((), ())


class FreshnessMemory:
    """Bounded memory of the highest accepted sequence per record id."""

    def __init__(self, *, own_key: bytes = b"", capacity: int = MAX_FRESHNESS_ENTRIES) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.own_key = own_key
        self.capacity = capacity
        self._entries: dict[bytes, FreshEntry] = {}
        #: per standing, record ids in order of last update (oldest first)
        self._order: dict[Standing, OrderedDict[bytes, None]] = {
            s: OrderedDict() for s in Standing}
        self._dirty: dict[bytes, bool] = {}     # record id -> True upsert, False removal
        self.evicted = 0
        self.expired = 0
        self.unrecorded_removals = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, record_id: bytes) -> FreshEntry | None:
        return self._entries.get(record_id)

    def floor(self, record_id: bytes, wall_now: float) -> FreshEntry | None:
        """The entry still in force for ``record_id`` (None if unknown or its time is up)."""
        entry = self._entries.get(record_id)
        if entry is None or entry.keep_until_wall < wall_now:
            return None
        return entry

    def highest_own_seq(self) -> int:
        """Highest sequence remembered for our own key (0 if none): a node whose boot
        epoch was lost must not sign below it, or every node would refuse it as stale."""
        entries = self._entries
        return max((entries[rid].seq for rid in self._order[Standing.OWN]), default=0)

    def accepted(self, binding: Binding, wall_now: float, *, credentialed: bool) -> None:
        """Remember that ``binding`` was accepted (the table calls this after a merge)."""
        rid = binding.record_id
        old = self._entries.get(rid)
        if old is not None and binding.seq < old.seq:
            return
        standing = self._standing(binding, old, credentialed)
        keep = max(wall_now + FRESHNESS_RETENTION_S,
                   binding.signed_end + 2 * CLOCK_SKEW_TOLERANCE_S)
        first = old.first_wall if old is not None and old.seq == binding.seq else wall_now
        self._put(FreshEntry(rid, binding.seq, first, keep, standing), wall_now)

    def _standing(self, binding: Binding, old: FreshEntry | None,
                  credentialed: bool) -> Standing:
        standing = Standing.TRANSIENT if old is None else old.standing
        if old is not None and binding.seq > old.seq:
            standing = max(standing, Standing.ESTABLISHED)
        if credentialed:
            standing = max(standing, Standing.CREDENTIALED)
        if self.own_key and binding.key == self.own_key:
            standing = Standing.OWN
        return standing

    def restore(self, entries: Iterable[FreshEntry], wall_now: float) -> None:
        """Load stored entries (oldest first); expired ones are dropped, the bound applies.

        Restoring marks nothing dirty except what the bound removes."""
        for entry in entries:
            if entry.keep_until_wall < wall_now:
                self.expired += 1
                continue
            old = self._entries.get(entry.record_id)
            if old is not None and old.seq >= entry.seq:
                continue
            self._put(entry, wall_now, dirty=False)

    def take_updates(self) -> FreshnessUpdates:
        """Changes since the last call, for the store (upserts and removals)."""
        if not self._dirty:
            return NO_UPDATES
        upserts = tuple(self._entries[rid] for rid, up in self._dirty.items()
                        if up and rid in self._entries)
        removals = tuple(rid for rid, up in self._dirty.items()
                         if not up or rid not in self._entries)
        self._dirty = {}
        return FreshnessUpdates(upserts, removals)

    def requeue(self, updates: FreshnessUpdates) -> None:
        """Give back updates the store failed to write: they go out with the next batch
        (newer changes to the same entries win)."""
        for entry in updates.upserts:
            if entry.record_id in self._entries:
                self._dirty.setdefault(entry.record_id, True)
        for rid in updates.removals:
            if rid not in self._entries:
                self._dirty.setdefault(rid, False)

    # ------------------------------------------------------------ internals
    def _put(self, entry: FreshEntry, wall_now: float, *, dirty: bool = True) -> None:
        rid = entry.record_id
        old = self._entries.get(rid)
        if old is not None:
            del self._order[old.standing][rid]
        self._entries[rid] = entry
        self._order[entry.standing][rid] = None
        if dirty:
            self._dirty[rid] = True
        if len(self._entries) > self.capacity:
            self._make_room(wall_now)

    def _make_room(self, wall_now: float) -> None:
        """Drop expired entries at the old end of each class, then evict the oldest entry
        of the lowest class until the bound holds."""
        for order in self._order.values():
            while order:
                rid = next(iter(order))
                if self._entries[rid].keep_until_wall >= wall_now:
                    break
                self._drop(rid)
                self.expired += 1
        for standing in Standing:
            order = self._order[standing]
            while order and len(self._entries) > self.capacity:
                self._drop(next(iter(order)))
                self.evicted += 1
            if len(self._entries) <= self.capacity:
                return

    def _drop(self, rid: bytes) -> None:
        entry = self._entries.pop(rid)
        del self._order[entry.standing][rid]
        if len(self._dirty) < 2 * self.capacity:
            self._dirty[rid] = False
        else:
            # The store is not keeping up (a failing disk): forget the removal; the store
            # trims itself to the best entries (FreshnessStore.apply) and drops expired
            # rows when it loads, so its file stays bounded all the same.
            self._dirty.pop(rid, None)
            self.unrecorded_removals += 1
