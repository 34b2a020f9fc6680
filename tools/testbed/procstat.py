"""Memory and CPU of test-bed processes, read from /proc (Linux).

:class:`ProcSampler` samples a set of PIDs in a background thread: resident set size from
``/proc/PID/status`` (``VmRSS``) and CPU time (``utime + stime`` of ``/proc/PID/stat``).
Figures are per process, so other load on the machine slows a node down but does not
count as its CPU. The node PIDs are the ``meshcomm`` processes themselves (``ip netns exec``
execs the command in place).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

CLOCK_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")
#: ``/proc/PID/stat`` fields after the command name: utime and stime are fields 14 and 15
#: (1-based), i.e. 11 and 12 counted from the state field.
_UTIME_AFTER_COMM: Final = 11
DEFAULT_PERIOD_S: Final = 0.5


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rpartition(")")[2].split()
    utime, stime = fields[_UTIME_AFTER_COMM], fields[_UTIME_AFTER_COMM + 1]
    return (int(utime) + int(stime)) / CLOCK_TICKS_PER_S


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    rss: int
    cpu_s: float


@dataclass
class ProcSampler:
    """Samples ``pids`` (label -> pid) every ``period_s`` until :meth:`stop`."""

    pids: Mapping[str, int]
    period_s: float = DEFAULT_PERIOD_S
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ProcSampler:
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="procstat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample_once()

    def sample_once(self) -> None:
        now = time.monotonic()
        for label, pid in self.pids.items():
            rss, cpu = rss_bytes(pid), cpu_seconds(pid)
            if rss is None or cpu is None:
                continue
            with self._lock:
                self.samples.setdefault(label, []).append(Sample(now, rss, cpu))

    def series(self, label: str) -> list[Sample]:
        with self._lock:
            return list(self.samples.get(label, ()))

    def rss_at(self, label: str, when: float) -> int | None:
        """The last RSS sampled at or before ``when``."""
        found = [s.rss for s in self.series(label) if s.at <= when]
        return found[-1] if found else None

    def peak_rss(self, label: str, start: float, end: float) -> int | None:
        found = [s.rss for s in self.series(label) if start <= s.at <= end]
        return max(found) if found else None

    def cpu_percent(self, label: str, start: float, end: float) -> float | None:
        """Mean CPU use (percent of one core) between the samples nearest ``start`` and
        ``end`` (inside the interval); None with fewer than two samples there."""
        inside = [s for s in self.series(label) if start <= s.at <= end]
        if len(inside) < 2 or inside[-1].at <= inside[0].at:
            return None
        first, last = inside[0], inside[-1]
        return 100.0 * (last.cpu_s - first.cpu_s) / (last.at - first.at)
