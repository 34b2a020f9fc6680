"""One timeline from many journals (issue 11, sans-IO): a streaming merge by corrected time.

Each device's journal entries come in seq order (an iterator per device: nothing is read
ahead beyond one entry per device, so memory stays bounded by the number of devices). An
entry's *corrected* time is its wall-clock stamp minus the device's estimated offset
(:mod:`meshcomm.export.clocks`); devices without an estimate keep their raw time and are
marked ``offset_known`` False.

Within one device the seq order is the truth (its wall clock may step backwards): the
merge key of an entry is never below its predecessor's (``order_s``), so a device's entries
stay in seq order in the timeline while the reported ``corrected_s`` is the honest value.
Ties go by device id, then seq: the same input gives the same timeline.
:func:`merge_placed` yields plain tuples (the export writes millions of them);
:func:`merge` the same as :class:`TimelineEvent` objects.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from meshcomm.export.clocks import ClockEstimate
from meshcomm.journal.chain import JournalEntry


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One journal entry placed on the merged timeline (the schema of timeline.jsonl)."""

    device: str            # node id, hex
    seq: int
    type: str
    raw_wall_s: float
    corrected_s: float
    offset_known: bool
    #: False: the device's journal failed verification and was kept (--allow-unverified)
    verified: bool
    mono_s: float
    data: Mapping[str, object]
    #: the merge key (corrected time, never below the device's previous entry's)
    order_s: float

    def as_json(self) -> dict[str, object]:
        return {"device": self.device, "seq": self.seq, "type": self.type,
                "raw_wall_s": self.raw_wall_s, "corrected_s": self.corrected_s,
                "offset_known": self.offset_known, "verified": self.verified,
                "mono_s": self.mono_s,
                "data": dict(self.data)}


#: An entry as the merge needs it: (seq, mono_s, wall_s, type, data).
Light = tuple[int, float, float, str, Mapping[str, object]]
#: One entry on the timeline, as the merge yields it (cheaper than an object per event):
#: (merge key, device, position in the device's stream, entry, corrected time). The
#: position breaks ties within a device, so entries themselves are never compared.
Placed = tuple[float, str, int, Light, float]


def light(entries: Iterable[JournalEntry]) -> Iterator[Light]:
    """Entries as :data:`Light` tuples."""
    for entry in entries:
        yield entry.seq, entry.mono_s, entry.wall_s, entry.type, entry.data


def _placed(device: str, entries: Iterable[Light], shift: float) -> Iterator[Placed]:
    floor = float("-inf")
    for position, entry in enumerate(entries):
        corrected = entry[2] - shift
        if corrected > floor:
            floor = corrected
        yield floor, device, position, entry, corrected


def merge_placed(journals: Mapping[str, Iterable[Light]],
                 clocks: ClockEstimate | None = None) -> Iterator[Placed]:
    """The entries of every device's journal (``device -> entries in seq order``, as
    :data:`Light` tuples) as one timeline by corrected time (see the module docstring),
    as :data:`Placed` tuples."""
    streams = []
    for device, entries in sorted(journals.items()):
        offset = clocks.offsets.get(device) if clocks is not None else None
        streams.append(_placed(device, entries, offset.offset_s if offset else 0.0))
    return heapq.merge(*streams)


def merge(journals: Mapping[str, Iterable[JournalEntry]],
          clocks: ClockEstimate | None = None,
          unverified: frozenset[str] = frozenset()) -> Iterator[TimelineEvent]:
    """:func:`merge_placed` as :class:`TimelineEvent` objects; devices in ``unverified``
    are marked so on each of their events."""
    known = frozenset(clocks.offsets) if clocks is not None else frozenset()
    placed = merge_placed({d: light(e) for d, e in journals.items()}, clocks)
    for order, device, _position, (seq, mono, wall, type_name, data), corrected in placed:
        yield TimelineEvent(device, seq, type_name, wall, corrected, device in known,
                            device not in unverified, mono, data, order)
