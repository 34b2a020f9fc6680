"""Writing the merged timeline (an IO adapter): ``timeline.jsonl`` and ``timeline.csv``.

Both are written to temporary files in the output directory and renamed into place once
complete and on disk, so a reader never sees half a timeline (a full disk fails the export
with the half-written files removed). One event per line, in timeline order:

* ``timeline.jsonl``: one JSON object per event, keys in this order: ``device``,
  ``seq``, ``type``, ``raw_wall_s``, ``corrected_s``, ``offset_known``, ``verified``,
  ``mono_s``, ``data`` (:meth:`TimelineEvent.as_json`); bytes in ``data`` are written as
  lowercase hex strings;
* ``timeline.csv``: the same columns, ``data`` as one JSON text.

The events a filter turns away (:mod:`.filters`) are not written; a kept message body is
removed unless bodies are asked for. Each line is formatted directly from the merged entry
(no object per event) and the files are written through large buffers: the export writes
millions of lines.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from meshcomm.export.filters import EventFilter, without_body
from meshcomm.export.timeline import Placed

JSONL_FILE: Final = "timeline.jsonl"
CSV_FILE: Final = "timeline.csv"
CSV_COLUMNS: Final = ("device", "seq", "type", "raw_wall_s", "corrected_s", "offset_known",
                      "verified", "mono_s", "data")
#: Progress is reported every this many events read from the merge.
PROGRESS_EVERY: Final = 25_000
#: Write buffer of each output file (bytes).
WRITE_BUFFER_BYTES: Final = 1 << 20
#: Event type names whose JSON text is kept (a journal has a handful; more are encoded
#: each time).
MAX_CACHED_TYPES: Final = 1024


def _hex(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not journal data")


_DATA_JSON = json.JSONEncoder(separators=(",", ":"), default=_hex).encode


def jsonable(value: object) -> object:
    """``value`` with bytes as hex strings (recursively), for JSON."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class DeviceMarks:
    """What every event of one device says about it."""

    offset_known: bool
    verified: bool


@dataclass(frozen=True, slots=True)
class Written:
    """How many merged events were read, and how many of them written."""

    read: int
    written: int


_CSV_SPECIAL: Final = frozenset(',"\r\n')


def csv_field(text: str) -> str:
    """``text`` as one CSV field, quoted as :mod:`csv`'s default dialect quotes it
    (only when it holds a comma, a quote or a line break)."""
    if _CSV_SPECIAL.isdisjoint(text):
        return text
    return '"' + text.replace('"', '""') + '"'


def _data_json(data: Mapping[str, object]) -> str:
    try:
        return _DATA_JSON(data)
    except (TypeError, ValueError):         # not plain journal data: never from a verified
        return _DATA_JSON(jsonable(data))   # journal, but no reason to stop the export


class _Lines:
    """Formats one event as a JSONL line and a CSV line (formatted here rather than by
    :mod:`csv`: three times faster, the same text)."""

    def __init__(self, marks: Mapping[str, DeviceMarks], include_bodies: bool) -> None:
        self._include_bodies = include_bodies
        self._device: dict[str, tuple[str, str, str, str]] = {}
        for device, mark in marks.items():
            flags = (f'"offset_known":{"true" if mark.offset_known else "false"},'
                     f'"verified":{"true" if mark.verified else "false"},')
            self._device[device] = (json.dumps(device), flags, csv_field(device),
                                    f"{mark.offset_known},{mark.verified}")
        self._types: dict[str, tuple[str, str]] = {}

    def _type_text(self, name: str) -> tuple[str, str]:
        text = self._types.get(name)
        if text is None:
            text = (json.dumps(name), csv_field(name))
            if len(self._types) < MAX_CACHED_TYPES:
                self._types[name] = text
        return text

    def format(self, device: str, seq: int, type_name: str, wall: float, corrected: float,
               mono: float, data: Mapping[str, object]) -> tuple[str, str]:
        """(JSONL line, CSV line) of one event."""
        if not self._include_bodies:
            data = without_body(data)
        data_json = _data_json(data)
        device_json, flags, device_csv, flags_csv = self._device[device]
        type_json, type_csv = self._type_text(type_name)
        wall_text, corrected_text, mono_text = repr(wall), repr(corrected), repr(mono)
        line = (f'{{"device":{device_json},"seq":{seq},"type":{type_json},'
                f'"raw_wall_s":{wall_text},"corrected_s":{corrected_text},{flags}'
                f'"mono_s":{mono_text},"data":{data_json}}}\n')
        row = (f"{device_csv},{seq},{type_csv},{wall_text},{corrected_text},{flags_csv},"
               f"{mono_text},{csv_field(data_json)}\r\n")
        return line, row


def write_timeline(placed: Iterable[Placed], marks: Mapping[str, DeviceMarks],
                   out_dir: Path, *, keep: EventFilter | None = None,
                   include_bodies: bool = False,
                   progress: Callable[[int], None] | None = None) -> Written:
    """Write both files from the merge (:func:`meshcomm.export.timeline.merge_placed`;
    ``marks`` holds every device in it). OSError (a full or read-only disk) leaves
    neither file behind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = (out_dir / JSONL_FILE, out_dir / CSV_FILE)
    temps = tuple(path.with_name(f".{path.name}.partial") for path in final)
    try:
        with ExitStack() as stack:
            jsonl, csv_file = (stack.enter_context(open(p, "w", encoding="utf-8", newline="",
                                                        buffering=WRITE_BUFFER_BYTES))
                               for p in temps)
            written = _write_lines(placed, _Lines(marks, include_bodies), jsonl, csv_file,
                                   keep if keep is not None and not keep.everything else None,
                                   progress)
            for handle in (jsonl, csv_file):
                _sync(handle)
        for temp, path in zip(temps, final, strict=True):
            os.replace(temp, path)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    return written


def _write_lines(placed: Iterable[Placed], lines: _Lines, jsonl: IO[str], csv_file: IO[str],
                 keep: EventFilter | None,
                 progress: Callable[[int], None] | None) -> Written:
    csv.writer(csv_file).writerow(CSV_COLUMNS)
    write_line, write_row = jsonl.write, csv_file.write
    read = written = 0
    for _order, device, _position, (seq, mono, wall, type_name, data), corrected in placed:
        read += 1
        if progress is not None and read % PROGRESS_EVERY == 0:
            progress(read)
        if keep is not None and not keep.keeps(type_name, corrected, data):
            continue
        line, row = lines.format(device, seq, type_name, wall, corrected, mono, data)
        write_line(line)
        write_row(row)
        written += 1
    return Written(read, written)


def _sync(handle: IO[str]) -> None:
    handle.flush()
    os.fsync(handle.fileno())
