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


def _placed(device: str, entries: Iterable[JournalEntry], clocks: ClockEstimate | None,
            verified: bool) -> Iterator[tuple[float, str, int, TimelineEvent]]:
    offset = clocks.offsets.get(device) if clocks is not None else None
    shift = offset.offset_s if offset is not None else 0.0
    floor = float("-inf")
    for entry in entries:
        corrected = entry.wall_s - shift
        floor = max(floor, corrected)
        event = TimelineEvent(device, entry.seq, entry.type, entry.wall_s, corrected,
                              offset is not None, verified, entry.mono_s, entry.data, floor)
        yield floor, device, entry.seq, event


def merge(journals: Mapping[str, Iterable[JournalEntry]],
          clocks: ClockEstimate | None = None,
          unverified: frozenset[str] = frozenset()) -> Iterator[TimelineEvent]:
    """The entries of every device's journal (``device -> entries in seq order``) as one
    timeline by corrected time (see the module docstring); devices in ``unverified`` are
    marked so on each of their events."""
    streams = [_placed(device, entries, clocks, device not in unverified)
               for device, entries in sorted(journals.items())]
    for _key, _device, _seq, event in heapq.merge(*streams):
        yield event
