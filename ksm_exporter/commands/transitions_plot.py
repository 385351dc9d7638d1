"""`transitions --plot FILE.svg|FILE.png`: the landing page's picture, written to a file.

SVG is the landing page's own drawing (model/chart.py). PNG is drawn by matplotlib (the
`plot` extra) from the same points, edges and colours: the exporter never needs it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Optional

from ksm_exporter.experiment.plot import PlotUnavailable, require_matplotlib
from ksm_exporter.model.chart import (
    CAUSE_COLOUR,
    MEMORY_SERIES,
    RUNNING_FILL,
    SERIES_STYLE,
    Mark,
    Series,
    render_svg,
    running_spans,
    window,
)
from ksm_exporter.model.derived import MIB
from ksm_exporter.state.history import marks_of, series_of_edges
from ksm_exporter.state.transitions import Transition

DAY = 86400.0
MARKER = {"running": "^", "stopped": "v"}  # unmerging: a diamond


class PictureError(Exception):
    """The picture could not be written: one line for the user."""


def picture_window(
    series: Series, marks: Sequence[Mark], now: float, from_exporter: bool
) -> tuple[float, float]:
    """With the exporter's points, the last day of them, as its landing page shows; with
    the edges alone, their whole span."""
    times = [*series.times, *(m.time for m in marks)]
    if from_exporter:
        return window(series, marks, max(times, default=now), DAY)
    if not times:
        return now - 600, now
    start, end = min(times), max(times)
    pad = max((end - start) * 0.03, 300.0)
    return start - pad, end + pad


def write_picture(
    path: Path, history: Sequence[Transition], series: Optional[Series], now: float
) -> None:
    """`series`: the exporter's points (None: none, the edges are the points)."""
    marks = marks_of(history)
    points = series if series is not None else series_of_edges(history)
    start, end = picture_window(points, marks, now, series is not None)
    suffix = path.suffix.lower()
    try:
        if suffix == ".svg":
            svg = render_svg(points, marks, start, end, "KSM and free memory")
            path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n")
        elif suffix == ".png":
            write_png(path, points, marks, start, end)
        else:
            raise PictureError("the file name must end in .svg or .png")
    except PlotUnavailable as e:
        raise PictureError(str(e)) from None
    except OSError as e:
        raise PictureError(e.strerror or str(e)) from None


def write_png(path: Path, series: Series, marks: Sequence[Mark], start: float, end: float) -> None:
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # no display on a compute node
    import matplotlib.pyplot as plt

    def when(ts: Sequence[float]) -> list[datetime]:
        return [datetime.fromtimestamp(t) for t in ts]

    def mb(values: Sequence[float]) -> list[float]:
        return [v / MIB for v in values]  # NaN stays NaN: matplotlib leaves a gap

    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(9.6, 5.2), gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        for a, b in running_spans(series, marks, start, end):
            for ax in (top, bottom):
                ax.axvspan(*when((a, b)), color=RUNNING_FILL, linewidth=0)
        for name in reversed(MEMORY_SERIES):
            values = series.columns[name]
            if all(math.isnan(v) for v in values):
                continue  # the threshold only when known
            colour, dash, width, label = SERIES_STYLE[name]
            style = (0, tuple(float(x) for x in dash.split())) if dash else "solid"
            top.plot(
                when(series.times), mb(values), color=colour, linestyle=style, lw=width,
                label=label, marker="." if len(values) < 50 else None,
            )  # fmt: skip
        for m in marks:
            if not start <= m.time <= end:
                continue
            y = m.free_bytes / MIB if m.free_bytes is not None else math.nan
            top.scatter(
                when([m.time]), [y], marker=MARKER.get(m.to_state, "D"), s=70, zorder=5,
                color=CAUSE_COLOUR.get(m.cause, CAUSE_COLOUR["unknown"]), edgecolors="white",
            )  # fmt: skip
        for cause, colour in CAUSE_COLOUR.items():
            if any(m.cause == cause and start <= m.time <= end for m in marks):
                top.scatter([], [], marker="^", color=colour, label=f"start / stop by {cause}")
        saved = series.columns["saved_bytes"]
        if not all(math.isnan(v) for v in saved):
            colour, _, width, label = SERIES_STYLE["saved_bytes"]
            bottom.plot(when(series.times), mb(saved), color=colour, lw=width)
        top.set_ylabel("Memory (MB)")
        bottom.set_ylabel("KSM saved (MB)")
        bottom.set_xlabel("local time")
        bottom.set_xlim(*when((start, end)))
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            ax.set_ylim(bottom=0)
        top.legend(loc="lower left", fontsize=8, ncol=3, framealpha=0.9)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
