"""Writing the merged timeline (an IO adapter): ``timeline.jsonl`` and ``timeline.csv``.

Both are written to temporary files in the output directory and renamed into place once
complete and on disk, so a reader never sees half a timeline (a full disk fails the export
with the half-written files removed). One event per line, in timeline order:

* ``timeline.jsonl``: :meth:`TimelineEvent.as_json` objects (``device``, ``seq``,
  ``type``, ``raw_wall_s``, ``corrected_s``, ``offset_known``, ``verified``, ``mono_s``,
  ``data``); bytes in ``data`` are written as lowercase hex strings;
* ``timeline.csv``: the same columns, ``data`` as one JSON text.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Final

from meshcomm.export.timeline import TimelineEvent

JSONL_FILE: Final = "timeline.jsonl"
CSV_FILE: Final = "timeline.csv"
CSV_COLUMNS: Final = ("device", "seq", "type", "raw_wall_s", "corrected_s", "offset_known",
                      "verified", "mono_s", "data")
#: Progress is reported every this many events.
PROGRESS_EVERY: Final = 100_000


def jsonable(value: object) -> object:
    """``value`` with bytes as hex strings (recursively), for JSON."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def write_timeline(events: Iterable[TimelineEvent], out_dir: Path,
                   progress: Callable[[int], None] | None = None) -> int:
    """Write both files; returns the number of events. OSError (a full or read-only
    disk) leaves neither file behind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = (out_dir / JSONL_FILE, out_dir / CSV_FILE)
    temps = tuple(path.with_name(f".{path.name}.partial") for path in final)
    count = 0
    try:
        with ExitStack() as stack:
            jsonl, csv_file = (stack.enter_context(open(p, "w", encoding="utf-8",
                                                        newline="")) for p in temps)
            rows = csv.writer(csv_file)
            rows.writerow(CSV_COLUMNS)
            for event in events:
                record = event.as_json()
                record["data"] = jsonable(record["data"])
                jsonl.write(json.dumps(record, separators=(",", ":")) + "\n")
                rows.writerow([*(record[c] for c in CSV_COLUMNS[:-1]),
                               json.dumps(record["data"], separators=(",", ":"))])
                count += 1
                if progress is not None and count % PROGRESS_EVERY == 0:
                    progress(count)
            for handle in (jsonl, csv_file):
                _sync(handle)
        for temp, path in zip(temps, final, strict=True):
            os.replace(temp, path)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    return count


def _sync(handle: IO[str]) -> None:
    handle.flush()
    os.fsync(handle.fileno())
