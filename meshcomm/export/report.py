"""``report.html``: one self-contained page about the incident (issue 11).

:func:`write_report` streams ``timeline.jsonl`` once through :class:`ReportData` (sans-IO,
every table bounded by a named limit, overflow counted and shown), then renders a Jinja2
template (autoescaped: journal text is attacker-controlled) with charts from
:mod:`.report_charts` (matplotlib, inline SVG) and the ladder diagrams as inline SVG. The
page fetches nothing: no script, no external style, font or image, and a
Content-Security-Policy of ``default-src 'none'`` makes the browser refuse any fetch that
slipped in. Sections (docs/export-outputs.md): incident summary, devices and verification,
clock offsets, timeline, topology over time, ladders per call and message, delivery
latency, drops and rejections.

The ladders are the packets of ``sip.pcapng``: the records :class:`.pcap.PacketPlanner`
writes (a mesh hop journaled at both ends is one arrow), drawn at corrected time between
columns for nodes (``node <8 hex>``) and clients (``<ip:port> @<node>``).
"""

from __future__ import annotations

import os
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from meshcomm.export import report_charts as charts
from meshcomm.export.pcap import (
    FROM_CLIENT,
    FROM_MESH,
    MESH_SUFFIX,
    ORIGINATED,
    PROGRESS_EVERY,
    TO_CLIENT,
    TO_MESH,
    PacketPlanner,
    PlannedPacket,
    ReadStats,
    iter_timeline,
)
from meshcomm.journal.events import JournalEventType as J

#: Dialogs (Call-IDs) drawn as ladders; the rest are listed.
MAX_LADDERS: Final = 20
#: Dialogs drawn as ladders (by their first request): calls and messages; the rest
#: (REGISTER, SUBSCRIBE, OPTIONS...) are listed.
LADDER_KINDS: Final = frozenset({"call", "message"})
#: Arrows drawn in one ladder (the rest counted under it).
MAX_LADDER_ARROWS: Final = 60
#: Columns in one ladder (arrows to further endpoints counted, not drawn).
MAX_LADDER_COLUMNS: Final = 10
#: Dialogs listed (not drawn) after the ladders.
MAX_LISTED_DIALOGS: Final = 500
#: Distinct Call-IDs / messages / responses remembered for counting once.
MAX_TRACKED: Final = 100_000
MAX_DEVICES: Final = 10_000
MAX_AORS: Final = 2_000
MAX_REASONS: Final = 200
MAX_LINKS: Final = 200
MAX_SPANS_PER_LINK: Final = 500
MAX_ROUTE_MARKS: Final = 5_000
MAX_TOPOLOGY_ROWS: Final = 300
MAX_TIMELINE_BINS: Final = 300
MAX_LATENCY_SAMPLES: Final = 20_000
MAX_PENDING_SENDS: Final = 200_000
MAX_LABEL: Final = 80
NODE_LABEL_HEX: Final = 8
REPORT_FILE: Final = "report.html"
TEMPLATE: Final = "report.html.j2"


def label(text: object, limit: int = MAX_LABEL) -> str:
    value = str(text)
    return value if len(value) <= limit else value[:limit - 1] + "…"


def node_label(device_or_peer: str) -> str:
    return "node " + device_or_peer.removesuffix(MESH_SUFFIX)[:NODE_LABEL_HEX].lower()


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None


class Bounded(OrderedDict[object, object]):
    """An insertion-ordered table of at most ``limit`` keys; :meth:`admit` says whether a
    new key fits (overflow counted)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.overflow = 0

    def admit(self, key: object) -> bool:
        if key in self:
            return True
        if len(self) >= self.limit:
            self.overflow += 1
            return False
        return True


# ============================================================ aggregates
@dataclass(slots=True)
class DeviceSeen:
    first_s: float
    last_s: float
    events: int = 0
    sip: int = 0
    unverified: int = 0


@dataclass(slots=True)
class Arrow:
    time_s: float
    src: str
    dst: str
    text: str
    comment: str
    verified: bool = True


@dataclass(slots=True)
class Dialog:
    call_id: str
    kind: str                                   # "call" or "message" (or the method)
    first_s: float
    last_s: float
    packets: int = 0
    final: str = ""                             # the first final answer to the request
    arrows: list[Arrow] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    hidden: int = 0                             # arrows not drawn (bounds)


@dataclass(slots=True)
class Latency:
    """A bounded sample (reservoir, seeded) and exact count/min/max, in ms."""

    samples: list[float] = field(default_factory=list)
    count: int = 0
    low: float = float("inf")
    high: float = float("-inf")
    rng: random.Random = field(default_factory=lambda: random.Random(11))

    def add(self, value_ms: float) -> None:
        self.count += 1
        self.low, self.high = min(self.low, value_ms), max(self.high, value_ms)
        if len(self.samples) < MAX_LATENCY_SAMPLES:
            self.samples.append(value_ms)
        else:
            slot = self.rng.randrange(self.count)
            if slot < MAX_LATENCY_SAMPLES:
                self.samples[slot] = value_ms

    def quantile(self, q: float) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


#: Timeline chart categories by the event type's first word (anything else: "other").
CATEGORIES: Final[Mapping[str, str]] = {
    "sip": "SIP", "neighbour": "topology", "route": "topology", "binding": "bindings",
    "dht": "bindings", "sf": "store-and-forward", "envelope": "drops", "journal": "journal",
    "node": "node", "uplink": "uplink", "upstream": "uplink"}
#: Drop and rejection event types -> the prefix their reasons are counted under.
DROP_TYPES: Final[Mapping[str, str]] = {
    J.ENVELOPE_DROPPED.value: "overlay", J.DHT_DROPPED.value: "dht",
    J.BINDING_REJECTED.value: "binding"}


class ReportData:
    """Every aggregate the report shows, fed one timeline event at a time (:meth:`add`),
    then :meth:`finish`. Each table is bounded (the limits above), overflow counted."""

    def __init__(self) -> None:
        self.events = 0
        self.start_s: float | None = None
        self.end_s: float | None = None
        self.types: Counter[str] = Counter()
        self.devices: dict[str, DeviceSeen] = {}
        self.devices_overflow = 0
        self.aors = Bounded(MAX_AORS)               # (aor, node) -> [first, last, state]
        self.bin_s, self._origin, self._lo, self._hi = 1.0, 0.0, 0, 0
        self.bins: dict[int, Counter[str]] = {}
        self.links = Bounded(MAX_LINKS)             # (device, neighbour) -> spans
        self.route_marks: list[tuple[str, float]] = []
        self.topology_rows: list[dict[str, object]] = []
        self.topology_overflow = 0
        self.drops = Bounded(MAX_REASONS)           # "kind: reason" -> count
        self.rejections = Bounded(MAX_REASONS)      # "404 Not Found (MESSAGE)" -> count
        self._counted = Bounded(MAX_TRACKED)        # messages/responses counted once
        self.calls = 0
        self.messages = 0
        self.planner = PacketPlanner()
        self.dialogs = Bounded(MAX_LADDERS * 2 + MAX_LISTED_DIALOGS)   # call_id -> Dialog
        self._drawn: Counter[str] = Counter()
        self._mesh_sends = Bounded(MAX_PENDING_SENDS)   # env -> send time
        self._client_sends = Bounded(MAX_PENDING_SENDS)  # message key -> (device, time)
        self.mesh_latency, self.delivery_latency = Latency(), Latency()
        self._handlers: Mapping[str, Callable[[str, float, str, Mapping[str, object]],
                                               None]] = {
            J.SIP_MESSAGE.value: self._sip, J.NEIGHBOUR_UP.value: self._neighbour,
            J.NEIGHBOUR_DOWN.value: self._neighbour, J.ROUTE_CHANGED.value: self._route,
            J.BINDING_LEARNED.value: self._binding, J.BINDING_UPDATED.value: self._binding,
            J.BINDING_EXPIRED.value: self._binding,
            **{kind: self._dropped for kind in DROP_TYPES}}

    def add(self, event: Mapping[str, object]) -> None:
        device, kind, data = event.get("device"), event.get("type"), event.get("data")
        when = _float(event.get("corrected_s"))
        if not isinstance(device, str) or not isinstance(kind, str) or when is None:
            return
        if not isinstance(data, dict):
            data = {}
        self.events += 1
        self.start_s = when if self.start_s is None else min(self.start_s, when)
        self.end_s = when if self.end_s is None else max(self.end_s, when)
        if kind in self.types or len(self.types) < MAX_REASONS:
            self.types[kind] += 1
        self._device(device, when, kind, event.get("verified") is False)
        self._bin(when, CATEGORIES.get(kind.split(".")[0], "other"))
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(device, when, kind, data)
        if kind == J.SIP_MESSAGE.value:
            for packet in self.planner.add(event):
                self._arrow(packet)

    def finish(self) -> None:
        for packet in self.planner.finish():
            self._arrow(packet)
        end = self.end_s or 0.0
        for spans in self.links.values():
            assert isinstance(spans, list)
            if spans and spans[-1][1] is None:
                spans[-1][1] = end

    # ------------------------------------------------------------ per event
    def _device(self, device: str, when: float, kind: str, unverified: bool) -> None:
        seen = self.devices.get(device)
        if seen is None:
            if len(self.devices) >= MAX_DEVICES:
                self.devices_overflow += 1
                return
            seen = self.devices[device] = DeviceSeen(when, when)
        seen.first_s, seen.last_s = min(seen.first_s, when), max(seen.last_s, when)
        seen.events += 1
        seen.sip += kind == J.SIP_MESSAGE.value
        seen.unverified += unverified

    def _bin(self, when: float, category: str) -> None:
        if not self.bins:
            self._origin = when
        index = int((when - self._origin) // self.bin_s)
        if not self.bins:
            self._lo = self._hi = index
        self._lo, self._hi = min(self._lo, index), max(self._hi, index)
        self.bins.setdefault(index, Counter())[category] += 1
        while self._hi - self._lo >= MAX_TIMELINE_BINS:        # coarsen: double the bins
            merged: dict[int, Counter[str]] = {}
            for i, counts in self.bins.items():
                merged.setdefault(i // 2, Counter()).update(counts)
            self.bins, self.bin_s = merged, self.bin_s * 2
            self._lo, self._hi = self._lo // 2, self._hi // 2

    def _count(self, table: Bounded, key: str) -> None:
        if table.admit(key):
            table[key] = int(str(table.get(key, 0))) + 1

    def _dropped(self, device: str, when: float, kind: str,
                 data: Mapping[str, object]) -> None:
        del device, when
        self._count(self.drops, label(f"{DROP_TYPES[kind]}: {data.get('reason', '?')}"))


    def _sip(self, device: str, when: float, kind: str, data: Mapping[str, object]) -> None:
        del kind
        direction, method, status = data.get("dir"), data.get("method"), data.get("status")
        if direction == "dropped":
            self._count(self.drops, label(f"sip: {data.get('reason', '?')}"))
            return
        key = f"{data.get('call_id')}\x00{data.get('cseq')}\x00{method}\x00{status}"
        if status is None and method in ("INVITE", "MESSAGE") and self._first(
                "dialog:" + str(data.get("call_id")) if method == "INVITE" else key):
            if method == "INVITE":
                self.calls += 1
            else:
                self.messages += 1
        if (isinstance(status, int) and status >= 300
                and direction in (FROM_CLIENT, ORIGINATED) and self._first(key)):
            reason = _response_text(data)
            self._count(self.rejections, label(f"{reason} ({method})"
                                               + (" shed" if data.get("note") == "shed"
                                                  else "")))
        self._latency(device, when, direction, key, data.get("env"))

    def _first(self, key: str) -> bool:
        """True the first time ``key`` is seen (bounded: beyond, every time)."""
        if key in self._counted:
            return False
        if self._counted.admit(key):
            self._counted[key] = True
        return True

    def _latency(self, device: str, when: float, direction: object, key: str,
                 env: object) -> None:
        if isinstance(env, str) and env:
            if direction == TO_MESH and self._mesh_sends.admit(env):
                self._mesh_sends.setdefault(env, when)
            elif direction == FROM_MESH and env in self._mesh_sends:
                sent = _float(self._mesh_sends.pop(env))
                if sent is not None:
                    self.mesh_latency.add((when - sent) * 1000.0)
        if direction == FROM_CLIENT and self._client_sends.admit(key):
            self._client_sends.setdefault(key, (device, when))
        elif direction == TO_CLIENT and key in self._client_sends:
            found = self._client_sends[key]
            assert isinstance(found, tuple)
            if found[0] != device:
                del self._client_sends[key]
                self.delivery_latency.add((when - float(found[1])) * 1000.0)

    def _neighbour(self, device: str, when: float, kind: str,
                   data: Mapping[str, object]) -> None:
        neighbour = str(data.get("neighbour", "?"))
        up = kind == J.NEIGHBOUR_UP.value
        self._topology_row(when, device, "neighbour up" if up else "neighbour down",
                           node_label(neighbour))
        link = (node_label(device), node_label(neighbour))
        if not self.links.admit(link):
            return
        spans = self.links.setdefault(link, [])
        assert isinstance(spans, list)
        is_open = bool(spans) and spans[-1][1] is None
        if up and not is_open and len(spans) < MAX_SPANS_PER_LINK:
            spans.append([when, None])
        elif not up and is_open:
            spans[-1][1] = when

    def _route(self, device: str, when: float, kind: str, data: Mapping[str, object]) -> None:
        del kind
        if len(self.route_marks) < MAX_ROUTE_MARKS:
            self.route_marks.append((node_label(device), when))
        via = data.get("next_hop")
        text = (f"to {node_label(str(data.get('dst', '?')))}: lost" if via is None else
                f"to {node_label(str(data.get('dst', '?')))} via "
                f"{node_label(str(via))}, {data.get('hops')} hop(s)")
        self._topology_row(when, device, "route", text)

    def _topology_row(self, when: float, device: str, what: str, detail: str) -> None:
        if len(self.topology_rows) >= MAX_TOPOLOGY_ROWS:
            self.topology_overflow += 1
            return
        self.topology_rows.append({"time_s": when, "device": node_label(device),
                                   "what": what, "detail": label(detail)})

    def _binding(self, device: str, when: float, kind: str,
                 data: Mapping[str, object]) -> None:
        del device
        key = (label(data.get("aor", "?")), node_label(str(data.get("node", "?"))))
        if not self.aors.admit(key):
            return
        row = self.aors.setdefault(key, {"first_s": when, "last_s": when, "expired_s": None})
        assert isinstance(row, dict)
        if kind == J.BINDING_EXPIRED.value:
            row["expired_s"] = when
        else:
            row["last_s"], row["expired_s"] = when, None

    # ------------------------------------------------------------ ladders
    def _arrow(self, packet: PlannedPacket) -> None:
        data = packet.data
        call_id = label(data.get("call_id", "?"))
        dialog = self.dialogs.get(call_id)
        if dialog is None:
            if not self.dialogs.admit(call_id):
                return
            method = str(data.get("method", "?"))
            kind = {"INVITE": "call", "MESSAGE": "message"}.get(method, label(method, 20))
            dialog = self.dialogs[call_id] = Dialog(call_id, kind, packet.time_s,
                                                    packet.time_s)
            drawn = kind in LADDER_KINDS and self._drawn[kind] < MAX_LADDERS
            dialog.hidden = 0 if drawn else -1
            self._drawn[kind] += dialog.hidden == 0
        assert isinstance(dialog, Dialog)
        dialog.packets += 1
        dialog.last_s = max(dialog.last_s, packet.time_s)
        status = data.get("status")
        if not dialog.final and isinstance(status, int) and status >= 200:
            dialog.final = _response_text(data)
        if dialog.hidden < 0:                      # listed, not drawn
            return
        src, dst = _ends(packet)
        for end in (src, dst):
            if end not in dialog.columns and len(dialog.columns) < MAX_LADDER_COLUMNS:
                dialog.columns.append(end)
        if (len(dialog.arrows) >= MAX_LADDER_ARROWS or src not in dialog.columns
                or dst not in dialog.columns):
            dialog.hidden += 1
            return
        dialog.arrows.append(Arrow(packet.time_s, src, dst, _message_text(data),
                                   packet.comment, packet.verified))


def _ends(packet: PlannedPacket) -> tuple[str, str]:
    """Ladder columns (sender, receiver) of a packet: nodes and clients by name."""
    data, device = packet.data, packet.device
    peer = str(data.get("peer", "?"))
    here = node_label(device)
    far = (node_label(peer) if peer.endswith(MESH_SUFFIX)
           else label(f"{peer} @{device[:NODE_LABEL_HEX]}", 40))
    return (far, here) if data.get("dir") in (FROM_CLIENT, FROM_MESH) else (here, far)


def _response_text(data: Mapping[str, object]) -> str:
    start, status = data.get("start"), data.get("status")
    if isinstance(start, str) and start.startswith("SIP/2.0 "):
        return label(start[len("SIP/2.0 "):], 40)
    return f"{status}"


def _message_text(data: Mapping[str, object]) -> str:
    status = data.get("status")
    if isinstance(status, int):
        return label(f"{_response_text(data)} ({data.get('method')})", 40)
    return label(data.get("method", "?"), 40)


# ============================================================ rendering
LADDER_LEFT: Final = 110
LADDER_COLUMN: Final = 170
LADDER_TOP: Final = 56
LADDER_ROW: Final = 26


def ladder_layout(dialog: Dialog) -> dict[str, object]:
    """Positions for the ladder template (columns, arrows; times relative to the first)."""
    x = {name: LADDER_LEFT + i * LADDER_COLUMN for i, name in enumerate(dialog.columns)}
    arrows = [{"x1": x[a.src], "x2": x[a.dst], "y": LADDER_TOP + i * LADDER_ROW,
               "text": a.text, "comment": a.comment, "verified": a.verified,
               "at": f"+{(a.time_s - dialog.first_s) * 1000.0:.0f} ms"}
              for i, a in enumerate(dialog.arrows)]
    height = LADDER_TOP + len(arrows) * LADDER_ROW + 20
    return {"dialog": dialog, "width": LADDER_LEFT + len(x) * LADDER_COLUMN,
            "height": height, "columns": [{"name": n, "x": v} for n, v in x.items()],
            "arrows": arrows}


def _latency_row(name: str, latency: Latency) -> dict[str, object]:
    return {"name": name, "count": latency.count,
            "p50": latency.quantile(0.5), "p95": latency.quantile(0.95),
            "min": latency.low if latency.count else None,
            "max": latency.high if latency.count else None,
            "chart": charts.latency_chart(name, latency.samples) if latency.count else ""}


def _devices(data: ReportData, summary: Mapping[str, object]) -> list[dict[str, object]]:
    problems: dict[str, list[Mapping[str, object]]] = {}
    for problem in _rows(summary.get("problems")):
        problems.setdefault(str(problem.get("device")), []).append(problem)
    rows = []
    for device in _rows(summary.get("devices")):
        name = str(device.get("device", "?"))
        seen = data.devices.get(name)
        found = problems.get(name, [])
        verdict = ("verified" if device.get("verified") and not found else
                   "problems" if found else "not verified")
        rows.append({**device, "label": node_label(name), "seen": seen, "verdict": verdict,
                     "problems": found[:20], "more_problems": max(0, len(found) - 20),
                     "merged": device.get("merged", True)})
    return rows


def _rows(value: object) -> list[Mapping[str, object]]:
    return [row for row in value if isinstance(row, Mapping)] if isinstance(value, list) else []


def _link_spans(data: ReportData) -> list[tuple[str, list[tuple[float, float]]]]:
    out = []
    for key, spans in data.links.items():
        if isinstance(key, tuple) and isinstance(spans, list):
            out.append((f"{key[0]} – {key[1]}",
                        [(float(a), float(b if b is not None else data.end_s or a))
                         for a, b in spans]))
    return out


def _by_count(table: Bounded) -> list[tuple[str, int]]:
    return sorted(((str(k), int(str(v))) for k, v in table.items()), key=lambda kv: -kv[1])


def report_context(data: ReportData, summary: Mapping[str, object]) -> dict[str, object]:
    """Everything the template shows (charts rendered here, as SVG text)."""
    start = data.start_s or 0.0
    lo = min(data.bins, default=0)
    categories = sorted({c for counts in data.bins.values() for c in counts})
    series = {c: [data.bins.get(i, Counter())[c] for i in range(lo, max(data.bins,
                                                                         default=-1) + 1)]
              for c in categories}
    devices = _devices(data, summary)
    offsets = [(str(d["label"]), float(str(d["offset_s"])),
                float(str(d.get("offset_uncertainty_s") or 0.0)))
               for d in devices if isinstance(d.get("offset_s"), int | float)]
    dialogs = [d for d in data.dialogs.values() if isinstance(d, Dialog)]
    drops, rejections = _by_count(data.drops), _by_count(data.rejections)
    links = _link_spans(data)
    return {
        "summary": summary, "data": data, "devices": devices, "start_s": start,
        "end_s": data.end_s or start, "aors": [
            {"aor": k[0], "node": k[1], **v}  # type: ignore[index,dict-item]
            for k, v in data.aors.items()],
        "timeline_chart": charts.timeline_chart(data.bin_s, start + lo * data.bin_s
                                                if data.bins else start, series),
        "topology_chart": charts.topology_chart(start, links, data.route_marks)
        if links or data.route_marks else "",
        "offsets_chart": charts.offsets_chart(offsets) if offsets else "",
        "ladders": [ladder_layout(d) for d in dialogs if d.hidden >= 0],
        "listed": [d for d in dialogs if d.hidden < 0],
        "latency": [_latency_row("mesh hop (to-mesh → from-mesh, same envelope)",
                                 data.mesh_latency),
                    _latency_row("delivery (client → node … node → other client)",
                                 data.delivery_latency)],
        "drops": drops, "rejections": rejections,
        "drops_chart": charts.counts_chart(drops + rejections) if drops or rejections
        else "",
        "limits": {"ladders": MAX_LADDERS, "arrows": MAX_LADDER_ARROWS,
                   "listed": MAX_LISTED_DIALOGS, "topology_rows": MAX_TOPOLOGY_ROWS,
                   "latency_samples": MAX_LATENCY_SAMPLES}}


def utc(value: object) -> str:
    """Unix seconds as UTC date and time, to the millisecond ("" for no value)."""
    seconds = _float(value)
    if seconds is None or not -1e11 < seconds < 1e11:
        return ""
    stamp = datetime.fromtimestamp(seconds, tz=UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"


def _environment() -> Environment:
    environment = Environment(loader=PackageLoader("meshcomm.export", "templates"),
                              autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)
    environment.filters["utc"] = utc
    return environment


def render_report(timeline_jsonl: Path, summary: Mapping[str, object], *,
                  progress: Callable[[int], None] | None = None) -> str:
    """The page as text (the timeline read once, streaming)."""
    data = ReportData()
    read = ReadStats()
    for event in iter_timeline(timeline_jsonl, read):
        data.add(event)
        if progress is not None and data.events % PROGRESS_EVERY == 0:
            progress(data.events)
    data.finish()
    context = report_context(data, summary)
    context["lines_skipped"] = read.skipped
    for key in ("timeline_chart", "topology_chart", "offsets_chart", "drops_chart"):
        context[key] = Markup(context[key])      # matplotlib's SVG: text XML-escaped
    for row in context["latency"]:               # type: ignore[attr-defined]
        row["chart"] = Markup(row["chart"])
    page: str = _environment().get_template(TEMPLATE).render(context)
    return page


def write_report(timeline_jsonl: Path, summary: dict[str, object], out: Path, *,
                 progress: Callable[[int], None] | None = None) -> None:
    """Write ``out`` (report.html) from the timeline and the export summary
    (``ExportSummary.as_json()``); whole or not at all (a temporary file renamed).
    ``progress`` is called with the number of events read every PROGRESS_EVERY."""
    page = render_report(timeline_jsonl, summary, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.partial")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, out)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
