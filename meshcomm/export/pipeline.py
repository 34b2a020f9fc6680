"""``meshcomm export``'s work (issue 11): journals in, one verified timeline out.

1. Each journal is verified (chain, checkpoints with the device's key when its data
   directory holds it). A device whose journal has problems is **refused** (its entries
   stay out of the timeline) unless ``allow_unverified``: then it is merged with every one
   of its events marked ``verified: false``.
2. Several copies of one device's journal are compared (:mod:`.forks`): copies that
   disagree are a fork, named by device and entry, and that device is unverified; the
   longest copy is the one merged.
3. The send/receive pairs of the SIP messages the devices journaled (:mod:`.exchanges`)
   give each device's clock offset against the reference device (:mod:`.clocks`).
4. The journals are merged by corrected time (:mod:`.timeline`) and written
   (:mod:`.outputs`), streaming: memory is bounded by the number of devices and the
   exchange tables, not by the journals' length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from meshcomm.export.clocks import ClockEstimate, estimate_offsets
from meshcomm.export.exchanges import ExchangeFinder
from meshcomm.export.forks import find_fork
from meshcomm.export.outputs import write_timeline
from meshcomm.export.reader import (
    ExportInputError,
    Source,
    entries,
    journal_paths,
    open_source,
)
from meshcomm.export.timeline import merge

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ProblemRow:
    """One finding for ``--json``'s ``problems``: ``entry`` is the journal entry's seq."""

    device: str
    entry: int
    kind: str
    detail: str = ""


@dataclass(slots=True)
class ExportSummary:
    devices: list[dict[str, object]] = field(default_factory=list)
    events: int = 0
    problems: list[ProblemRow] = field(default_factory=list)
    exchanges: int = 0
    clocks_consistent: bool = True

    @property
    def verified(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        return {"devices": self.devices, "events": self.events, "verified": self.verified,
                "exchanges": self.exchanges, "clocks_consistent": self.clocks_consistent,
                "problems": [{"device": p.device, "entry": p.entry, "kind": p.kind,
                              "detail": p.detail} for p in self.problems]}


def export(paths: Iterable[Path], out_dir: Path, *, allow_unverified: bool = False,
           reference: str | None = None, progress: Progress | None = None) -> ExportSummary:
    """See the module docstring. ExportInputError for a path that holds no journal."""
    say = progress or (lambda _text: None)
    summary = ExportSummary()
    by_device: dict[str, list[Source]] = {}
    for path in journal_paths(paths):
        say(f"verifying {path}")
        source = open_source(path)
        by_device.setdefault(source.device_hex, []).append(source)
    chosen, unverified = _choose(by_device, summary)
    merged = {d: s for d, s in chosen.items() if allow_unverified or d not in unverified}
    clocks = _clocks(merged, reference, summary, say)
    say(f"merging {len(merged)} journal(s)")
    summary.events = write_timeline(
        merge({d: entries(s.path) for d, s in merged.items()}, clocks,
              frozenset(unverified)), out_dir,
        lambda n: say(f"{n} events written"))
    for device, source in sorted(chosen.items()):
        offset = clocks.offsets.get(device) if clocks is not None else None
        summary.devices.append({
            "device": device, "path": str(source.path), "entries": source.report.count,
            "verified": device not in unverified, "merged": device in merged,
            "checkpoints": source.report.checkpoints,
            "signed": source.public_key is not None,
            "unsigned_tail": source.report.unsigned_tail,
            "offset_s": None if offset is None else offset.offset_s,
            "offset_uncertainty_s": None if offset is None else offset.uncertainty_s})
    return summary


def _choose(by_device: dict[str, list[Source]],
            summary: ExportSummary) -> tuple[dict[str, Source], set[str]]:
    """The copy of each device to merge (the longest), and the devices not verified."""
    chosen: dict[str, Source] = {}
    unverified: set[str] = set()
    for device, copies in sorted(by_device.items()):
        for source in copies:
            for problem in source.report.problems:
                summary.problems.append(ProblemRow(device, problem.seq, problem.kind.value,
                                                   f"{source.path}: {problem.message}"))
                unverified.add(device)
        if len(copies) > 1:
            fork = find_fork({str(s.path): entries(s.path) for s in copies})
            if fork is not None:
                sides = "; ".join(" ".join(names) for _, names in fork.sides)
                summary.problems.append(ProblemRow(device, fork.seq, "fork", sides))
                unverified.add(device)
        chosen[device] = max(copies, key=lambda s: s.report.count)
    return chosen, unverified


def _clocks(merged: dict[str, Source], reference: str | None, summary: ExportSummary,
            say: Progress) -> ClockEstimate | None:
    if not merged:
        return None
    say("pairing sends and receipts")
    finder = ExchangeFinder()
    for device, source in merged.items():
        for entry in entries(source.path):
            finder.add(device, entry)
    pairs = list(finder.exchanges())
    summary.exchanges = len(pairs)
    ref = sorted(merged)[0]
    if reference:
        matches = [d for d in sorted(merged) if d.startswith(reference.lower())]
        if len(matches) != 1:
            raise ExportInputError(f"--reference {reference}: {len(matches)} merged devices "
                                   "start so (give enough hex digits for one)")
        ref = matches[0]
    clocks = estimate_offsets(pairs, ref)
    summary.clocks_consistent = clocks.consistent
    return clocks
