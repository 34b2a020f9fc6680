"""Copies of a device's journal that disagree (meshcomm/export/forks.py): a device that
rewrote its history and signed it again is caught by an older copy; prefixes are no fork."""

from __future__ import annotations

from collections.abc import Iterator

from meshcomm.export.forks import find_fork
from meshcomm.journal.chain import JournalChain, JournalEntry
from meshcomm.security.identity import Identity

DEVICE = Identity(b"\x05" * 32)


def _journal(texts: list[str]) -> list[JournalEntry]:
    chain = JournalChain(DEVICE.node_id)
    return [chain.append("note", {"text": t}, float(i), 1000.0 + i)
            for i, t in enumerate(texts)]


def test_a_rewritten_history_forks_from_the_older_copy() -> None:
    honest = _journal(["a", "b", "c", "d"])
    rewritten = _journal(["a", "b", "C!", "d", "e"])      # re-chained: verifies alone
    collected = honest[:3]                                # pulled over the mesh earlier
    fork = find_fork({"device": rewritten, "collected": collected, "backup": honest})
    assert fork is not None and fork.seq == 3
    assert sorted(names for _, names in fork.sides) == [("backup", "collected"),
                                                        ("device",)]


def test_prefixes_and_equal_copies_are_no_fork() -> None:
    full = _journal(["a", "b", "c"])
    assert find_fork({"x": full, "y": full[:1], "z": [], "w": full}) is None
    assert find_fork({}) is None


def test_the_walk_streams() -> None:
    chain = JournalChain(DEVICE.node_id)
    read = [0]

    def entries() -> Iterator[JournalEntry]:
        for i in range(1_000_000):
            read[0] += 1
            yield chain.append("note", {"i": i if i < 5 else -i}, float(i), float(i))
    other = JournalChain(DEVICE.node_id)
    copy = [other.append("note", {"i": i}, float(i), float(i)) for i in range(10)]
    fork = find_fork({"device": entries(), "copy": copy})
    assert fork is not None and fork.seq == 6 and read[0] <= 7
