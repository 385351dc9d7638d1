"""`--plot FILE`: saved MB and pages_sharing over the run, as a PNG.

matplotlib is the optional extra `ksm-exporter[plot]`: the daemon never needs it, and it
is several times the size of everything else the exporter installs.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

INSTALL_HINT = "--plot needs matplotlib: pip install 'ksm-exporter[plot]'"


class PlotUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Point:
    seconds: float  # since KSM was started (step 5): no points are taken before
    pages_sharing: int
    saved_mb: float


class Mark(NamedTuple):
    """A vertical line on the plot: when something happened (settled, the PRNG run)."""

    seconds: float  # since KSM was started
    label: str


def require_matplotlib() -> None:
    """Raise PlotUnavailable with INSTALL_HINT where matplotlib cannot be imported: checked
    before the experiment starts, not after minutes of it."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None


def write_plot(
    points: Sequence[Point],
    path: Path,
    title: str,
    marks: Sequence[Mark] = (),
) -> None:
    """Two panels sharing the time axis; `marks` are vertical lines (settled, PRNG run)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # no display on a compute node
    import matplotlib.pyplot as plt

    t = [p.seconds for p in points]
    # Readings are samples (every --interval): joined by lines, each one marked.
    style = {"marker": ".", "markersize": 4, "linewidth": 1.2}
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5))
    try:
        top.plot(t, [p.saved_mb for p in points], color="tab:green", **style)
        top.set_ylabel("KSM saved (MB)")
        top.set_title(title)
        bottom.plot(t, [p.pages_sharing for p in points], color="tab:blue", **style)
        bottom.set_ylabel("pages_sharing")
        bottom.set_xlabel("seconds since KSM start")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            ax.set_ylim(bottom=0)
            for i, (x, label) in enumerate(marks):
                ax.axvline(x, color="gray", linestyle="--", linewidth=1)
                if ax is top:
                    ax.annotate(
                        label,
                        (x, 1),
                        xycoords=("data", "axes fraction"),
                        xytext=(3, -12 * (i + 1)),  # marks close in time must not overlap
                        textcoords="offset points",
                        fontsize=8,
                        color="gray",
                    )
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
