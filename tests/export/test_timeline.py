"""The streaming merge of journals by corrected time (meshcomm/export/timeline.py)."""

from __future__ import annotations

from collections.abc import Iterator

from meshcomm.export.clocks import ClockEstimate, Exchange, Offset, estimate_offsets
from meshcomm.export.timeline import merge
from meshcomm.journal.chain import JournalEntry


def _entries(node: str, stamps: list[float], counter: list[int] | None = None
             ) -> Iterator[JournalEntry]:
    for seq, wall in enumerate(stamps, start=1):
        if counter is not None:
            counter[0] += 1                   # how far the merge has read this device
        yield JournalEntry(seq, float(seq), wall, bytes.fromhex(node), "x", {"n": seq},
                           b"\0" * 32, b"\0" * 32)


def test_devices_hours_apart_merge_in_true_order_and_each_device_in_seq_order() -> None:
    # b's clock is two hours ahead; it receives a's message 0.1 s after a sent it.
    clocks = estimate_offsets([Exchange("aa", "bb", 10.0, 7210.1),
                               Exchange("bb", "aa", 7215.0, 15.05)], "aa")
    events = list(merge({"aa": _entries("aa", [10.0, 15.05, 20.0]),
                         "bb": _entries("bb", [7210.1, 7215.0, 7205.0])}, clocks))
    # bb is estimated 7200.025 s ahead: its entries at 10.075, 14.975 and (stepped back on
    # its clock) 4.975, kept after its second at 14.975.
    assert [(e.device, e.seq) for e in events] == [
        ("aa", 1), ("bb", 1), ("bb", 2), ("bb", 3), ("aa", 2), ("aa", 3)]
    third = events[3]
    assert third.corrected_s < third.order_s and third.offset_known
    assert all(e.as_json()["device"] in ("aa", "bb") for e in events)


def test_the_merge_streams_one_entry_ahead_per_device() -> None:
    read = {name: [0] for name in ("aa", "bb", "cc")}
    journals = {name: _entries(name, [float(i) for i in range(100_000)], read[name])
                for name in read}
    merged = merge(journals, ClockEstimate("aa", {"aa": Offset(0.0, 0.0)}, True))
    first = [next(merged) for _ in range(30)]
    assert [e.offset_known for e in first[:3]] == [True, False, False]
    assert max(n[0] for n in read.values()) <= 11          # not the whole journals
