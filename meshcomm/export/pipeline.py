"""``meshcomm export``'s work (issue 11): journals in, one verified timeline out.

1. Each journal is opened once, inside one read transaction (:class:`.reader.Snapshot`),
   and read **twice** in all, whatever else is done:

   * the first pass verifies it (chain, checkpoints with the device's key when one is
     beside it) and, in the same pass, feeds its entries to the send/receipt pairing
     (:mod:`.exchanges`: SIP records by envelope id, witness records) that ties the clocks
     together and to the cross-journal check (:mod:`.crosscheck`). A journal with a
     problem is verified again in full, so its problems are named exactly as ``meshcomm
     journal verify`` names them. A device whose journal has problems is **refused** (its
     entries stay out of the timeline, the pairing and the cross-journal check, which are
     then fed again with the merged journals only) unless ``allow_unverified``: then it is
     merged with every one of its events marked ``verified: false``;
   * several copies of one device's journal are compared (:mod:`.forks`): copies that
     disagree are a fork, named by device and entry, and that device is unverified; the
     longest copy is the one merged;
   * the pairs give each device's clock offset against the reference device
     (:mod:`.clocks`); the cross-journal findings follow, and a device they show to have
     rewritten its history (:data:`REFUSING_KINDS`) is refused like one that fails alone
     (the clocks are then estimated again without it);
   * the second pass merges the journals by corrected time (:mod:`.timeline`) and writes
     them (:mod:`.outputs`), filtered (:mod:`.filters`): filters never change what is
     verified or how the clocks are estimated.

   Then ``sip.pcapng`` (:mod:`.pcap`) and ``report.html`` (:mod:`.report`) are written
   from ``timeline.jsonl``.

2. Memory is bounded by the number of devices (one open journal and one batch of rows
   each), the pairing's and the cross-journal check's bounded tables, not by the
   journals' length.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from meshcomm.export.clocks import ClockEstimate, estimate_offsets
from meshcomm.export.crosscheck import CheckKind, CrossCheck
from meshcomm.export.exchanges import ExchangeFinder
from meshcomm.export.filters import EventFilter
from meshcomm.export.forks import find_fork
from meshcomm.export.outputs import JSONL_FILE, DeviceMarks, write_timeline
from meshcomm.export.pcap import write_pcap
from meshcomm.export.reader import (
    ExportInputError,
    JournalFile,
    Snapshot,
    journal_file,
    journal_paths,
    read_copy_info,
)
from meshcomm.export.timeline import merge_placed
from meshcomm.journal.chain import JournalEntry
from meshcomm.journal.verify import VerifyReport

Progress = Callable[[str], None]
#: The capture and the report, beside timeline.jsonl / timeline.csv (outputs.py).
PCAP_FILE: Final = "sip.pcapng"
REPORT_FILE: Final = "report.html"
#: Progress lines about counts come at most this often (seconds); stage lines always.
PROGRESS_INTERVAL_S: Final = 2.0
#: Open files one journal may need (the database, its -wal and -shm files).
FILES_PER_JOURNAL: Final = 3
#: Open files kept for everything else (outputs, Python, the CLI).
SPARE_FILES: Final = 64
#: Cross-journal findings that make the device they name unverified (its journal is a
#: rewritten history, or contradicts what a witness saw): it is refused like a journal
#: that fails on its own. The others (a cut tail, a bad witness record, a receipt whose
#: send is missing) are reported without refusing anyone.
REFUSING_KINDS: Final = frozenset({CheckKind.FORK.value, CheckKind.WITNESS_CONTRADICTS.value})


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
    #: events written (after the filters)
    events: int = 0
    #: events merged (before the filters)
    events_merged: int = 0
    problems: list[ProblemRow] = field(default_factory=list)
    exchanges: int = 0
    #: send/receipt records the pairing could not hold (see exchanges.py)
    exchanges_dropped: int = 0
    clocks_consistent: bool = True
    filters: dict[str, object] = field(default_factory=dict)
    include_bodies: bool = False
    #: the cross-journal check's tables (crosscheck.CrossCheck.counts)
    crosscheck: dict[str, int] = field(default_factory=dict)
    #: packets in sip.pcapng (None: not written)
    sip_packets: int | None = None

    @property
    def verified(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        return {"devices": self.devices, "events": self.events,
                "events_merged": self.events_merged, "verified": self.verified,
                "exchanges": self.exchanges, "exchanges_dropped": self.exchanges_dropped,
                "clocks_consistent": self.clocks_consistent, "filters": self.filters,
                "include_bodies": self.include_bodies, "crosscheck": self.crosscheck,
                "sip_packets": self.sip_packets,
                "problems": [{"device": p.device, "entry": p.entry, "kind": p.kind,
                              "detail": p.detail} for p in self.problems]}


class _Say:
    """Progress: stage lines always, count lines at most every PROGRESS_INTERVAL_S."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._last = time.monotonic()

    def stage(self, text: str) -> None:
        if self._progress is not None:
            self._progress(text)
            self._last = time.monotonic()

    def tick(self, text: Callable[[], str]) -> None:
        if self._progress is not None and time.monotonic() - self._last >= PROGRESS_INTERVAL_S:
            self.stage(text())


@dataclass(slots=True)
class _Verified:
    """What the first pass found."""

    chosen: dict[str, JournalFile] = field(default_factory=dict)
    reports: dict[Path, VerifyReport] = field(default_factory=dict)
    unverified: set[str] = field(default_factory=set)
    #: devices whose chosen copy has been fed to the sinks, in order
    fed: list[str] = field(default_factory=list)
    sinks: _Sinks | None = None


class _Sinks:
    """What the first pass feeds besides the verifier: the send/receipt pairing and
    (unless ``cross`` is False) the cross-journal check, device after device."""

    def __init__(self, devices: Iterable[str], keys: dict[str, bytes], *,
                 cross: bool = True) -> None:
        self.finder = ExchangeFinder()
        self.finder.expect(devices)
        self.cross = CrossCheck(keys) if cross else None

    def feeder(self, device: str) -> Callable[[JournalEntry], None]:
        pair = self.finder.add
        if self.cross is None:
            return lambda entry: pair(device, entry)
        self.cross.begin(device)
        check = self.cross.add

        def feed(entry: JournalEntry) -> None:
            pair(device, entry)
            check(device, entry)
        return feed


def export(paths: Iterable[Path], out_dir: Path, *, allow_unverified: bool = False,
           reference: str | None = None, progress: Progress | None = None,
           keep: EventFilter | None = None, include_bodies: bool = False,
           capture: bool = True, report: bool = True) -> ExportSummary:
    """See the module docstring. ExportInputError for a path that holds no journal (or
    a ``reference`` that names no merged device); OSError when the output cannot be
    written. ``capture``/``report``: also write sip.pcapng / report.html (from
    timeline.jsonl, once it is written)."""
    say = _Say(progress)
    keep = keep or EventFilter()
    summary = ExportSummary(filters=keep.as_json(), include_bodies=include_bodies)
    by_device = _inputs(paths)
    _allow_open_files(sum(len(copies) for copies in by_device.values()))
    with ExitStack() as stack:
        snaps = {jf.path: stack.enter_context(Snapshot(jf.path))
                 for copies in by_device.values() for jf in copies}
        keys = _keys(by_device)
        found = _verify(by_device, snaps, _Sinks(by_device, keys), summary, say)
        merged = [d for d in sorted(found.chosen)
                  if allow_unverified or d not in found.unverified]
        sinks = _fed(found, merged, keys, snaps, say)
        clocks = _clocks(sinks.finder, merged, reference, summary)
        assert sinks.cross is not None
        for device in merged:              # collected copies of journals that kept growing
            copy = read_copy_info(found.chosen[device].path)
            if copy is not None:
                sinks.cross.copied(device, *copy)
        if _cross_problems(sinks.cross, clocks, found, summary) and not allow_unverified:
            merged = [d for d in merged if d not in found.unverified]
            say.stage("pairing sends and receipts again without the refused journal(s)")
            finder = _refeed(_Sinks(merged, {}, cross=False), merged, found, snaps).finder
            clocks = _clocks(finder, merged, reference, summary)
        say.stage(f"merging {len(merged)} journal(s)")
        total = sum(found.reports[found.chosen[d].path].count for d in merged)
        marks = {d: DeviceMarks(clocks is not None and d in clocks.offsets,
                                d not in found.unverified) for d in merged}
        written = write_timeline(
            merge_placed({d: snaps[found.chosen[d].path].light_entries() for d in merged},
                         clocks),
            marks, out_dir, keep=keep, include_bodies=include_bodies,
            progress=lambda n: say.tick(lambda: f"merged {n} of {total} events"))
    summary.events, summary.events_merged = written.written, written.read
    _describe(found, merged, clocks, summary)
    timeline = out_dir / JSONL_FILE
    if capture:
        say.stage("writing sip.pcapng")
        summary.sip_packets = write_pcap(
            timeline, out_dir / PCAP_FILE,
            progress=lambda n: say.tick(lambda: f"{n} SIP packets written"))
    if report:
        # matplotlib and Jinja2 load here, not with the module: 50 MiB and 0.4 s that an
        # export without the report (tools/bench/export.py, --no-report) never needs
        from meshcomm.export.report import write_report
        say.stage("writing report.html")
        write_report(timeline, summary.as_json(), out_dir / REPORT_FILE,
                     progress=lambda n: say.tick(lambda: f"report: {n} events read"))
    return summary


def _inputs(paths: Iterable[Path]) -> dict[str, list[JournalFile]]:
    """The journals given (each file once), by the device they say they are from."""
    by_device: dict[str, list[JournalFile]] = {}
    seen: set[Path] = set()
    for path in journal_paths(paths):
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        found = journal_file(path)
        by_device.setdefault(found.device_hex, []).append(found)
    return by_device


def _keys(by_device: dict[str, list[JournalFile]]) -> dict[str, bytes]:
    """Each device's public key (any copy's: each was checked against the node id)."""
    keys: dict[str, bytes] = {}
    for device, copies in by_device.items():
        for jf in copies:
            if jf.public_key is not None:
                keys[device] = jf.public_key
                break
    return keys


def _allow_open_files(journals: int) -> None:
    """Raise the soft limit of open files (up to the hard one) so every journal can be
    open at once (the merge reads them all together)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = journals * FILES_PER_JOURNAL + SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        # if refused, a journal that cannot be opened is reported as unreadable
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def _verify(by_device: dict[str, list[JournalFile]], snaps: dict[Path, Snapshot],
            sinks: _Sinks, summary: ExportSummary, say: _Say) -> _Verified:
    """The first pass: every journal verified; the single copies fed to the sinks."""
    found = _Verified(sinks=sinks)
    say.stage(f"verifying {sum(len(c) for c in by_device.values())} journal(s) of "
              f"{len(by_device)} device(s)")
    for index, (device, copies) in enumerate(sorted(by_device.items())):
        say.tick(lambda: f"verified {index} of {len(by_device)} devices")  # noqa: B023
        for jf in copies:
            sink = None
            if len(copies) == 1:
                sink = sinks.feeder(device)
                found.fed.append(device)
            report = found.reports[jf.path] = snaps[jf.path].scan(
                jf.public_key, sink, _scan_progress(say, jf.path))
            for problem in report.problems:
                summary.problems.append(ProblemRow(device, problem.seq, problem.kind.value,
                                                   f"{jf.path}: {problem.message}"))
                found.unverified.add(device)
        if len(copies) > 1:
            fork = find_fork({str(jf.path): snaps[jf.path].entries() for jf in copies})
            if fork is not None:
                sides = "; ".join(" ".join(names) for _, names in fork.sides)
                summary.problems.append(ProblemRow(device, fork.seq, "fork", sides))
                found.unverified.add(device)
        found.chosen[device] = max(copies, key=lambda jf: found.reports[jf.path].count)
    return found


def _scan_progress(say: _Say, path: Path) -> Callable[[int], None]:
    return lambda n: say.tick(lambda: f"verifying {path}: {n} entries read")


def _fed(found: _Verified, merged: list[str], keys: dict[str, bytes],
         snaps: dict[Path, Snapshot], say: _Say) -> _Sinks:
    """The sinks fed exactly the merged journals: the first pass's, completed with the
    devices that had several copies, or fed again when it took in a journal that is not
    merged."""
    assert found.sinks is not None
    fed = set(found.fed)
    if fed <= set(merged):
        return _refeed(found.sinks, [d for d in merged if d not in fed], found, snaps)
    say.stage("pairing sends and receipts again without the refused journal(s)")
    return _refeed(_Sinks(merged, keys), merged, found, snaps)


def _refeed(sinks: _Sinks, devices: list[str], found: _Verified,
            snaps: dict[Path, Snapshot]) -> _Sinks:
    for device in devices:
        feed = sinks.feeder(device)
        for entry in snaps[found.chosen[device].path].entries():
            feed(entry)
    return sinks


def _cross_problems(cross: CrossCheck, clocks: ClockEstimate | None, found: _Verified,
                    summary: ExportSummary) -> bool:
    """The cross-journal findings into the summary; True when one refuses a device
    (:data:`REFUSING_KINDS`) that was verified until then."""
    refused = False
    for problem in cross.problems(clocks):
        summary.problems.append(ProblemRow(problem.device, problem.entry, problem.kind,
                                           problem.detail))
        if problem.kind in REFUSING_KINDS and problem.device in found.chosen and (
                problem.device not in found.unverified):
            found.unverified.add(problem.device)
            refused = True
    summary.crosscheck = cross.counts()
    return refused


def _clocks(finder: ExchangeFinder, merged: list[str], reference: str | None,
            summary: ExportSummary) -> ClockEstimate | None:
    summary.exchanges, summary.exchanges_dropped = finder.pairs, finder.dropped
    if not merged:
        return None
    ref = merged[0]
    if reference:
        matches = [d for d in merged if d.startswith(reference.lower())]
        if len(matches) != 1:
            raise ExportInputError(f"--reference {reference}: {len(matches)} merged devices "
                                   "start so (give enough hex digits for one)")
        ref = matches[0]
    clocks = estimate_offsets(finder.exchanges(), ref)
    summary.clocks_consistent = clocks.consistent
    return clocks


def _describe(found: _Verified, merged: list[str], clocks: ClockEstimate | None,
              summary: ExportSummary) -> None:
    for device, jf in sorted(found.chosen.items()):
        report = found.reports[jf.path]
        offset = clocks.offsets.get(device) if clocks is not None else None
        summary.devices.append({
            "device": device, "path": str(jf.path), "entries": report.count,
            "verified": device not in found.unverified, "merged": device in merged,
            "checkpoints": report.checkpoints, "signed": jf.public_key is not None,
            "unsigned_tail": report.unsigned_tail,
            "offset_s": None if offset is None else offset.offset_s,
            "offset_uncertainty_s": None if offset is None else offset.uncertainty_s})
