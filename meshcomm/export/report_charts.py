"""The report's charts (issue 11): matplotlib figures rendered to inline SVG, no JavaScript.

matplotlib is used without pyplot (a :class:`~matplotlib.figure.Figure` per chart, no
global state) with the Agg-free SVG backend. Text stays text (``svg.fonttype: none``), is
never parsed as mathtext (journal text is untrusted: a ``$`` must not reach the
mathtext parser) and is XML-escaped by the backend; the SVG ids are salted with a fixed
value so the same export gives the same report. Every chart takes aggregates whose size
is already bounded by :mod:`.report`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any, Final

import matplotlib
from matplotlib.figure import Figure

#: Longest label drawn (untrusted text is cut, with an ellipsis).
MAX_CHART_LABEL: Final = 48
_STYLE: Final[dict[Any, Any]] = {
    "svg.fonttype": "none", "svg.hashsalt": "meshcomm-report", "text.parse_math": False,
    "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}
PALETTE: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                  "#e377c2", "#7f7f7f")


def short(text: str, limit: int = MAX_CHART_LABEL) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _svg(figure: Figure) -> str:
    """The figure as an ``<svg>`` element (no XML prolog, no doctype)."""
    buffer = io.StringIO()
    with matplotlib.rc_context(_STYLE):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None},
                       bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.find("<svg"):]


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_STYLE):
        return Figure(figsize=(width, height), layout="constrained")


def timeline_chart(bin_s: float, start_s: float,
                   series: Mapping[str, Sequence[int]]) -> str:
    """Events per bin, stacked by category."""
    with matplotlib.rc_context(_STYLE):
        figure = _figure(9, 2.6)
        axes = figure.add_subplot()
        length = max((len(v) for v in series.values()), default=0)
        xs = [i * bin_s for i in range(length)]
        bottom = [0] * length
        for (name, values), color in zip(sorted(series.items()), PALETTE * 4, strict=False):
            axes.bar(xs, values, width=bin_s, bottom=bottom, align="edge", color=color,
                     label=short(name), linewidth=0)
            bottom = [a + b for a, b in zip(bottom, values, strict=True)]
        axes.set_xlabel(f"seconds after {start_s:.3f} (corrected, Unix time); bins of "
                        f"{bin_s:g} s")
        axes.set_ylabel("events")
        if series:
            axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        return _svg(figure)


def topology_chart(start_s: float, links: Sequence[tuple[str, Sequence[tuple[float, float]]]],
                   routes: Sequence[tuple[str, float]]) -> str:
    """Neighbour links up over time (bars), route changes (ticks) per device."""
    rows = [name for name, _ in links] + sorted({device for device, _ in routes})
    with matplotlib.rc_context(_STYLE):
        figure = _figure(9, 0.8 + 0.28 * max(1, len(rows)))
        axes = figure.add_subplot()
        for row, (_name, spans) in enumerate(links):
            axes.broken_barh([(a - start_s, max(b - a, 0.05)) for a, b in spans],
                             (row - 0.35, 0.7), color=PALETTE[2])
        route_rows = {device: len(links) + i
                      for i, device in enumerate(sorted({d for d, _ in routes}))}
        if routes:
            axes.scatter([t - start_s for _, t in routes], [route_rows[d] for d, _ in routes],
                         marker="|", s=120, color=PALETTE[1], label="route change")
            axes.legend(loc="upper right", fontsize=8)
        axes.set_yticks(range(len(rows)), [short(r) for r in rows])
        axes.set_ylim(-0.7, max(len(rows), 1) - 0.3)
        axes.invert_yaxis()
        axes.set_xlabel(f"seconds after {start_s:.3f} (corrected)")
        return _svg(figure)


def latency_chart(title: str, samples_ms: Sequence[float]) -> str:
    with matplotlib.rc_context(_STYLE):
        figure = _figure(4.4, 2.4)
        axes = figure.add_subplot()
        if samples_ms:
            axes.hist(samples_ms, bins=min(40, max(5, len(samples_ms) // 3)),
                      color=PALETTE[0])
        axes.set_title(short(title), fontsize=9)
        axes.set_xlabel("milliseconds")
        axes.set_ylabel("messages")
        return _svg(figure)


def counts_chart(counts: Sequence[tuple[str, int]]) -> str:
    """Horizontal bars, largest first (drops and rejections by reason)."""
    with matplotlib.rc_context(_STYLE):
        figure = _figure(7, 0.6 + 0.26 * max(1, len(counts)))
        axes = figure.add_subplot()
        labels = [short(name) for name, _ in counts]
        axes.barh(range(len(counts)), [n for _, n in counts], color=PALETTE[3])
        axes.set_yticks(range(len(counts)), labels)
        axes.invert_yaxis()
        axes.set_xlabel("count")
        return _svg(figure)


def offsets_chart(rows: Sequence[tuple[str, float, float]]) -> str:
    """Each device's estimated clock offset with its uncertainty (seconds)."""
    with matplotlib.rc_context(_STYLE):
        figure = _figure(7, 0.6 + 0.3 * max(1, len(rows)))
        axes = figure.add_subplot()
        axes.errorbar([r[1] for r in rows], range(len(rows)), xerr=[r[2] for r in rows],
                      fmt="o", color=PALETTE[4], capsize=3)
        axes.set_yticks(range(len(rows)), [short(r[0]) for r in rows])
        axes.invert_yaxis()
        axes.axvline(0.0, color="#999", linewidth=0.8)
        axes.set_xlabel("offset from the reference clock (s), ± uncertainty")
        return _svg(figure)
