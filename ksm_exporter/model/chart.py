"""The node's KSM story as one picture, drawn as SVG text: free memory against ksmtuned's
threshold, KSM's running time as shaded bands, each start and stop as a marker coloured by
its cause, the savings below.

Pure: it draws what it is given (the watcher's history, the recorded edges) and reads
nothing, so the landing page and `transitions --plot` draw the same picture. No script, no
external reference, inline styles only: it shows under `Content-Security-Policy:
default-src 'none'; style-src 'unsafe-inline'`. Every text from elsewhere is escaped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Optional

from ksm_exporter.model.derived import MIB

# The history's columns after time, in bytes (run: the raw `run` value). NaN: not observed.
COLUMNS = (
    "mem_free_bytes",
    "mem_available_bytes",
    "ksmtuned_free_bytes",
    "ksmtuned_threshold_bytes",
    "saved_bytes",
    "run",
)
MAX_POINTS = 20000  # more than the history keeps: a longer answer is not one of ours

Row = list[float]


class BadSeries(ValueError):
    """A history answer that is not well-formed; the message says what."""


@dataclass(frozen=True)
class Series:
    """Points oldest first: `times` (Unix seconds) and one list per COLUMNS name."""

    times: list[float]
    columns: dict[str, list[float]]

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[float]]) -> Series:
        return cls(
            times=[r[0] for r in rows],
            columns={name: [r[i + 1] for r in rows] for i, name in enumerate(COLUMNS)},
        )

    def to_json(self) -> dict[str, object]:
        """NaN (not observed) as null."""
        rows = [
            [t, *(None if math.isnan(self.columns[c][i]) else self.columns[c][i] for c in COLUMNS)]
            for i, t in enumerate(self.times)
        ]
        return {"columns": ["time", *COLUMNS], "points": rows}

    @classmethod
    def from_json(cls, doc: object) -> Series:
        """What /history answers; BadSeries when it is not that."""
        if not isinstance(doc, dict) or doc.get("columns") != ["time", *COLUMNS]:
            raise BadSeries(f"not a history: columns are not {['time', *COLUMNS]}")
        points = doc.get("points")
        if not isinstance(points, list) or len(points) > MAX_POINTS:
            raise BadSeries(f"points: not a list of at most {MAX_POINTS}")
        rows: list[Row] = []
        for n, p in enumerate(points, 1):
            if not isinstance(p, list) or len(p) != len(COLUMNS) + 1:
                raise BadSeries(f"point {n}: not a list of {len(COLUMNS) + 1} numbers")
            row = [math.nan if v is None else v for v in p]
            if not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 2**62
                for v in row
                if not (isinstance(v, float) and math.isnan(v))
            ) or math.isnan(row[0]):
                raise BadSeries(f"point {n}: not finite numbers")
            rows.append([float(v) for v in row])
        return cls.from_rows(rows)


@dataclass(frozen=True)
class Mark:
    """One edge of `run`: when, into which state, who made it (cause text such as
    `other (mom)`), and ksmtuned's free figure (else MemFree) at it, bytes."""

    time: float
    to_state: str  # running, stopped, unmerging
    cause: str  # ksmtuned, other, unknown: the marker's colour
    label: str  # the tooltip
    free_bytes: Optional[int]


# Colours: Okabe-Ito, distinguishable with the common colour-vision deficiencies.
SERIES_STYLE = {
    "ksmtuned_free_bytes": ("#0072b2", "", 2.0, "ksmtuned free (MemFree+Buffers+Cached)"),
    "mem_free_bytes": ("#56b4e9", "", 1.2, "MemFree"),
    "mem_available_bytes": ("#999999", "4 3", 1.2, "MemAvailable"),
    "ksmtuned_threshold_bytes": ("#222222", "7 4", 1.6, "ksmtuned threshold"),
    "saved_bytes": ("#009e73", "", 1.8, "KSM saved"),
}
CAUSE_COLOUR = {"ksmtuned": "#e69f00", "other": "#cc79a7", "unknown": "#555555"}
RUNNING_FILL = "#dff2e9"
MEMORY_SERIES = (
    "ksmtuned_free_bytes",
    "mem_free_bytes",
    "mem_available_bytes",
    "ksmtuned_threshold_bytes",
)
# A longer silence between points is a gap (the exporter was down), not a line.
GAP_SECONDS = 900.0

WIDTH, HEIGHT = 960, 460
LEFT, RIGHT = 72, WIDTH - 16
MEM_TOP, MEM_BOTTOM = 64, 300
SAVED_TOP, SAVED_BOTTOM = 326, 408
TIME_STEPS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def nice_step(span: float, ticks: int = 5) -> float:
    """1, 2 or 5 times a power of ten, giving at most about `ticks` ticks over `span`."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def time_ticks(start: float, end: float, most: int = 9) -> list[float]:
    """Ticks at whole local minutes/hours/days, at most `most` of them."""
    step = next((s for s in TIME_STEPS if (end - start) / s <= most), TIME_STEPS[-1])
    offset = datetime.fromtimestamp(start).astimezone().utcoffset()
    shift = offset.total_seconds() if offset is not None else 0.0
    first = math.ceil((start + shift) / step) * step - shift
    return [first + i * step for i in range(int((end - first) // step) + 1)]


def _tick_label(t: float, step: float) -> str:
    d = datetime.fromtimestamp(t)
    if step >= 86400 or (d.hour == 0 and d.minute == 0):
        return d.strftime("%a %d %b")
    return d.strftime("%H:%M")


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


class _Axis:
    """Maps data to pixels for one panel."""

    def __init__(self, start: float, end: float, top: float, bottom: float, ymax: float):
        self.start, self.end = start, max(end, start + 1)
        self.top, self.bottom, self.ymax = top, bottom, max(ymax, 1.0)

    def x(self, t: float) -> float:
        return LEFT + (t - self.start) / (self.end - self.start) * (RIGHT - LEFT)

    def y(self, v: float) -> float:
        return self.bottom - v / self.ymax * (self.bottom - self.top)


def _path(times: Sequence[float], values: Sequence[float], axis: _Axis) -> str:
    """One polyline of byte values on an MB axis, broken at unobserved points and gaps;
    averaged per pixel column, so the page stays small whatever the number of points."""
    parts: list[str] = []
    pen_down = False
    last_t = -math.inf
    column: int | None = None
    acc: list[float] = []

    def flush() -> None:
        nonlocal pen_down
        if column is None or not acc:
            return
        y = axis.y(sum(acc) / len(acc) / MIB)
        parts.append(f"{'L' if pen_down else 'M'}{column} {_num(y)}")
        pen_down = True

    for t, v in zip(times, values):
        if t < axis.start or t > axis.end:
            continue
        if math.isnan(v) or t - last_t > GAP_SECONDS:
            flush()
            acc = []
            column = None
            pen_down = False
        last_t = t
        if math.isnan(v):
            continue
        x = round(axis.x(t))
        if x != column:
            flush()
            acc = []
            column = x
        acc.append(v)
    flush()
    return "".join(parts)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def running_spans(
    series: Series, marks: Sequence[Mark], start: float, end: float
) -> list[tuple[float, float]]:
    """When KSM ran within [start, end]: from the exact edges, and from the polls' `run`
    before the first edge (or throughout when there is none)."""
    spans: list[tuple[float, float]] = []
    edges = sorted((m for m in marks if m.time <= end), key=lambda m: m.time)
    run = series.columns["run"]
    first_edge = edges[0].time if edges else math.inf
    # Before the first edge: runs of the polled state.
    since: float | None = None
    for t, r in zip(series.times, run):
        if t >= first_edge or t > end:
            break
        up = not math.isnan(r) and round(r) & 3 == 1
        if up and since is None:
            since = max(t, start)
        elif not up and since is not None:
            spans.append((since, t))
            since = None
    if since is not None:
        spans.append((since, min(first_edge, end)))
    for i, m in enumerate(edges):
        if m.to_state != "running":
            continue
        until = edges[i + 1].time if i + 1 < len(edges) else end
        if until > start:
            spans.append((max(m.time, start), min(until, end)))
    return [(a, b) for a, b in spans if b > a]


# Marker outlines around (0, 0): a triangle up for a start, down for a stop, a diamond
# for unmerging.
_SHAPES = {
    "running": ((0, -8), (8, 6.4), (-8, 6.4)),
    "stopped": ((0, 8), (8, -6.4), (-8, -6.4)),
}
_DIAMOND = ((0, -8), (8, 0), (0, 8), (-8, 0))


def _marker(x: float, y: float, to_state: str) -> str:
    shape = _SHAPES.get(to_state, _DIAMOND)
    return f'<polygon points="{" ".join(f"{_num(x + dx)},{_num(y + dy)}" for dx, dy in shape)}"/>'


def _legend(present: Sequence[str], causes: Sequence[str], has_running: bool) -> str:
    items: list[str] = []
    x = LEFT
    y = 18

    def room(width: int) -> None:
        nonlocal x, y
        if x + width > RIGHT:
            x, y = LEFT, y + 20

    for name in present:
        colour, dash, width, label = SERIES_STYLE[name]
        w = 46 + 7 * len(label)
        room(w)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        items.append(
            f'<g class="legend-item"><line x1="{x}" y1="{y}" x2="{x + 24}" y2="{y}" '
            f'stroke="{colour}" stroke-width="{max(width, 2)}"{dashes}/>'
            f'<text x="{x + 30}" y="{y + 4}">{escape(label)}</text></g>'
        )
        x += w
    if has_running:
        room(122)
        items.append(
            f'<g class="legend-item"><rect x="{x}" y="{y - 7}" width="24" height="14" '
            f'fill="{RUNNING_FILL}" stroke="#9fd3bb"/>'
            f'<text x="{x + 30}" y="{y + 4}">KSM running</text></g>'
        )
        x += 122
    for cause in causes:
        label = f"start / stop by {cause}"
        w = 64 + 7 * len(label)
        room(w)
        colour = CAUSE_COLOUR.get(cause, CAUSE_COLOUR["unknown"])
        items.append(
            f'<g class="legend-item" fill="{colour}" stroke="#ffffff" stroke-width="1">'
            f"{_marker(x + 6, y, 'running')}{_marker(x + 22, y, 'stopped')}"
            f'<text x="{x + 34}" y="{y + 4}" fill="#222222" stroke="none">'
            f"{escape(label)}</text></g>"
        )
        x += w
    return "".join(items)


def render_svg(
    series: Series,
    marks: Sequence[Mark],
    start: float,
    end: float,
    title: str = "",
) -> str:
    """The picture over [start, end] (Unix seconds) as one <svg> element."""
    end = max(end, start + 60)
    in_window = [m for m in marks if start <= m.time <= end]
    present = [n for n in MEMORY_SERIES if _finite(series.columns[n])]
    mem_values = [v for n in present for v in _finite(series.columns[n])]
    mem_values += [m.free_bytes for m in in_window if m.free_bytes is not None]
    mem_top = max(mem_values, default=0.0) / MIB * 1.08
    mem_step = nice_step(mem_top)
    mem = _Axis(start, end, MEM_TOP, MEM_BOTTOM, math.ceil(mem_top / mem_step) * mem_step)
    saved_values = _finite(series.columns["saved_bytes"])
    saved_top = max(saved_values, default=0.0) / MIB * 1.1
    saved_step = nice_step(saved_top, 2)
    saved = _Axis(
        start, end, SAVED_TOP, SAVED_BOTTOM, math.ceil(saved_top / saved_step) * saved_step
    )
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ksm-chart" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'font-family="DejaVu Sans, Verdana, sans-serif" font-size="12" fill="#222222">',
        f"<title>{escape(title or 'KSM and free memory')}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
    ]
    spans = running_spans(series, marks, start, end)
    for a, b in spans:
        for axis in (mem, saved):
            out.append(
                f'<rect class="running" x="{_num(axis.x(a))}" y="{axis.top}" '
                f'width="{_num(max(axis.x(b) - axis.x(a), 1))}" height="{axis.bottom - axis.top}" '
                f'fill="{RUNNING_FILL}"/>'
            )
    # Grid and value axes, MB.
    for axis, step, caption in (
        (mem, mem_step, "Memory (MB)"),
        (saved, saved_step, "KSM saved (MB)"),
    ):
        v = 0.0
        while v <= axis.ymax + 1e-9:
            y = _num(axis.y(v))
            out.append(
                f'<line x1="{LEFT}" y1="{y}" x2="{RIGHT}" y2="{y}" stroke="#e4e4e4"/>'
                f'<text x="{LEFT - 6}" y="{_num(axis.y(v) + 4)}" text-anchor="end">'
                f"{_num(v)}</text>"
            )
            v += step
        out.append(
            f'<text x="{LEFT - 6}" y="{axis.top - 8}" text-anchor="start" '
            f'font-weight="bold" transform="translate({12 - LEFT + 6} 0)">{caption}</text>'
        )
        out.append(
            f'<rect x="{LEFT}" y="{axis.top}" width="{RIGHT - LEFT}" '
            f'height="{axis.bottom - axis.top}" fill="none" stroke="#888888"/>'
        )
    # Time axis, local time.
    ticks = time_ticks(start, end)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 3600.0
    for t in ticks:
        x = _num(mem.x(t))
        out.append(
            f'<line x1="{x}" y1="{MEM_TOP}" x2="{x}" y2="{MEM_BOTTOM}" stroke="#eeeeee"/>'
            f'<line x1="{x}" y1="{SAVED_BOTTOM}" x2="{x}" y2="{SAVED_BOTTOM + 5}" '
            'stroke="#888888"/>'
            f'<text x="{x}" y="{SAVED_BOTTOM + 18}" text-anchor="middle">'
            f"{escape(_tick_label(t, step))}</text>"
        )
    zone = time.strftime("%Z", time.localtime(end)) or "local"
    out.append(
        f'<text x="{RIGHT}" y="{SAVED_BOTTOM + 38}" text-anchor="end" fill="#555555">'
        f"local time ({escape(zone)}), {escape(_span_text(start, end))} to "
        f"{escape(datetime.fromtimestamp(end).strftime('%Y-%m-%d %H:%M'))}</text>"
    )
    # The series: one path each, the threshold only when known.
    for name in reversed(present):  # ksmtuned's free figure on top
        colour, dash, width, label = SERIES_STYLE[name]
        d = _path(series.times, series.columns[name], mem)
        if d:
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(
                f'<path class="series" data-series="{name}" d="{d}" fill="none" '
                f'stroke="{colour}" stroke-width="{width}"{dashes} stroke-linejoin="round">'
                f"<title>{escape(label)}</title></path>"
            )
    has_saved = bool(saved_values)
    if has_saved:
        colour, _, width, label = SERIES_STYLE["saved_bytes"]
        d = _path(series.times, series.columns["saved_bytes"], saved)
        out.append(
            f'<path class="series" data-series="saved_bytes" d="{d}" fill="none" '
            f'stroke="{colour}" stroke-width="{width}" stroke-linejoin="round">'
            f"<title>{escape(label)}</title></path>"
        )
    # The edges, exact: one marker each, its cause in the tooltip.
    for m in in_window:
        mx = mem.x(m.time)
        my = MEM_TOP + 10 if m.free_bytes is None else mem.y(m.free_bytes / MIB)
        colour = CAUSE_COLOUR.get(m.cause, CAUSE_COLOUR["unknown"])
        out.append(
            f'<g class="edge" data-cause="{escape(m.cause, quote=True)}" '
            f'data-state="{escape(m.to_state, quote=True)}" fill="{colour}" stroke="#ffffff" '
            f'stroke-width="1.2"><title>{escape(m.label)}</title>{_marker(mx, my, m.to_state)}</g>'
        )
    causes = [c for c in CAUSE_COLOUR if any(m.cause == c for m in in_window)]
    legend_series = [*present, "saved_bytes"] if has_saved else present
    out.append(_legend(legend_series, causes, bool(spans)))
    if not series.times and not in_window:
        out.append(
            f'<text x="{(LEFT + RIGHT) // 2}" y="{(MEM_TOP + MEM_BOTTOM) // 2}" '
            'text-anchor="middle" fill="#555555">No history yet: the watcher has not polled.'
            "</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _span_text(start: float, end: float) -> str:
    return datetime.fromtimestamp(start).strftime("%Y-%m-%d %H:%M")


def window(
    series: Series, marks: Sequence[Mark], now: float, longest: float
) -> tuple[float, float]:
    """[start, now]: the last `longest` seconds, or less when the history is shorter (at
    least ten minutes)."""
    known = [*series.times[:1], *(m.time for m in marks)]
    start = max(now - longest, min(known, default=now))
    return min(start, now - 600), now
