"""Copies of one device's journal that disagree (issue 11, sans-IO): a fork.

An investigator may hold several copies of a device's journal: the file taken off the
device, the copy ``ctl collect`` pulled over the mesh days earlier, a copy from a backup.
Each may verify on its own (:mod:`meshcomm.journal.audit`): a device with its key can
rewrite its history and sign it again. Two copies that hold different entry hashes at one
seq are a fork; the first such seq is named, with the copies on each side. A copy that is
only shorter (the older one) is no fork: it is a prefix of the other.

:func:`find_fork` walks the copies together in seq order, one entry of each at a time, so
memory stays bounded whatever their length; a copy's entries must come in seq order (what
the verifier checked).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from meshcomm.journal.chain import JournalEntry


@dataclass(frozen=True, slots=True)
class Fork:
    """Copies of one device's journal disagree from entry ``seq`` on: ``sides`` groups the
    copies (their names) that agree there, each group with the entry hash it holds."""

    seq: int
    sides: tuple[tuple[bytes, tuple[str, ...]], ...]


def find_fork(copies: Mapping[str, Iterable[JournalEntry]]) -> Fork | None:
    """The first seq where two of ``copies`` (name -> entries in seq order) hold different
    entries, or None when each copy is a prefix of the longest."""
    heads: dict[str, Iterator[JournalEntry]] = {name: iter(entries)
                                                for name, entries in copies.items()}
    current: dict[str, JournalEntry] = {}
    for name, it in heads.items():
        first = next(it, None)
        if first is not None:
            current[name] = first
    while current:
        seq = min(entry.seq for entry in current.values())
        at_seq = {name: e for name, e in current.items() if e.seq == seq}
        by_hash: dict[bytes, list[str]] = {}
        for name, entry in sorted(at_seq.items()):
            by_hash.setdefault(entry.entry_hash, []).append(name)
        if len(by_hash) > 1:
            return Fork(seq, tuple(sorted((h, tuple(names)) for h, names in by_hash.items())))
        for name in at_seq:
            nxt = next(heads[name], None)
            if nxt is None:
                del current[name]
            else:
                current[name] = nxt
    return None
