"""`ksm-exporter transitions`: the recorded KSM starts and stops, and the free memory at
which they happened.

The KSM test report asked when ksmtuned starts and stops KSM, and could only say "around
7 GB free" from a log written once a second by checkKSM_start_time.sh. The exporter
records every edge with the memory, ksmtuned's inputs and the cause; this prints them as
a table and, per direction, the free memory (MemFree, the log's "MB free") at the edges:
min, median, max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ksm_exporter.commands.bounded_fetch import BadUrl, FetchError, fetch_json
from ksm_exporter.commands.transitions_plot import PictureError, write_picture
from ksm_exporter.model.chart import BadSeries, Series
from ksm_exporter.model.derived import RunState, mebibytes
from ksm_exporter.model.edge_cause import Cause, cause_text, edge_rule_text
from ksm_exporter.model.terminal_text import shown
from ksm_exporter.model.watch_format import local_time
from ksm_exporter.readers import describe_error
from ksm_exporter.state.history import History
from ksm_exporter.state.history_file import history_path, read_points
from ksm_exporter.state.state_file import NOT_READ, parse_lines, read_tail
from ksm_exporter.state.transitions import Transition

PROG = "ksm-exporter transitions"

# How each direction is named in the summary.
DIRECTIONS = {
    RunState.RUNNING: "starts",
    RunState.STOPPED: "stops",
    RunState.UNMERGING: "unmerges",
}


class SourceError(Exception):
    """The history could not be read at all: one line for the user."""


def transitions_url(url: str) -> str:
    """The exporter's address, or its /transitions page already."""
    url = url.rstrip("/")
    return url if url.endswith("/transitions") else url + "/transitions"


def get_json(url: str) -> object:
    """The JSON a running exporter answers at `url` (bounded: bounded_fetch.py);
    SourceError says why not."""
    try:
        return fetch_json(url)
    except BadUrl as e:
        raise SourceError(f"--url {url}: {e}") from None
    except FetchError as e:
        raise SourceError(f"cannot read {url}: {e}") from None


def from_url(url: str) -> tuple[list[Transition], list[str]]:
    """The history a running exporter serves, and `entry N: why` for each bad entry."""
    entries = get_json(url)
    if not isinstance(entries, list):
        raise SourceError(f"{url} did not answer a list of transitions")
    out: list[Transition] = []
    problems: list[str] = []
    for n, entry in enumerate(entries, 1):
        try:
            out.append(Transition.from_json(entry))
        except ValueError as e:  # BadEntry: says what is wrong with it
            problems.append(f"entry {n}: {e}")
    return out, problems


def series_from_url(url: str) -> Series:
    """The points of the exporter's chart (its /history), for --plot."""
    url = url.rstrip("/").removesuffix("/transitions") + "/history"
    try:
        return Series.from_json(get_json(url))
    except BadSeries as e:
        raise SourceError(f"{url}: {e}") from None


def series_from_file(path: Path, problems: list[str]) -> Series | None:
    """The points the exporter saved beside its state file (None: there is no file), its
    bad lines named in `problems`."""
    try:
        points, dropped = read_points(path, time.time())
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SourceError(f"cannot read {path}: {describe_error(e)}") from None
    problems += [f"{n} lines of {path} ({why})" for why, n in sorted(dropped.items())]
    history = History()
    history.restore(points)
    return history.series()


def from_state_file(path: Path) -> tuple[list[Transition], list[str]]:
    """As the daemon loads it (state/state_file.py): its last 8 MiB, a FIFO or a device
    refused rather than read."""
    try:
        data, skipped = read_tail(path)
    except OSError as e:
        raise SourceError(f"cannot read {path}: {describe_error(e)}") from None
    entries, dropped = parse_lines(data)
    if skipped:
        dropped[NOT_READ] = 1
    return entries, [f"{n} lines ({why})" for why, n in sorted(dropped.items())]


def _mb(n: int | None) -> str:
    return "?" if n is None else str(mebibytes(n))


HEADER = ("time", "change", "used MB", "free MB", "ksmtuned's rule (MB)", "cause")
RIGHT = {2, 3}  # the MB columns


def table(history: Sequence[Transition]) -> list[str]:
    rows = [HEADER] + [
        (
            local_time(t.timestamp),
            f"{t.from_state.value if t.from_state else '?'} -> {t.to_state.value}",
            _mb(t.mem_used_bytes),
            _mb(t.mem_free_bytes),
            edge_rule_text(t),
            shown(cause_text(t.cause, t.controller)),  # the controller is the file's
        )
        for t in history
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return [
        "  ".join(
            cell.rjust(w) if i in RIGHT else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]


@dataclass(frozen=True)
class Direction:
    """The edges into one state: how many, by cause, and MemFree, ksmtuned's committed
    memory and threshold at them (bytes)."""

    state: RunState
    edges: int
    causes: dict[str, int]
    free_min: int | None
    free_median: int | None
    free_max: int | None
    committed_min: int | None = None
    committed_median: int | None = None
    committed_max: int | None = None
    threshold_min: int | None = None
    threshold_max: int | None = None

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["state"] = self.state.value
        return d

    def line(self) -> str:
        """`starts (-> running): 7 (ksmtuned 5, other 2); free memory min 2847 MB, ...`"""
        causes = ", ".join(f"{c} {n}" for c, n in self.causes.items())
        if self.free_min is None:
            memory = "free memory not recorded"
        else:
            memory = (
                f"free memory min {_mb(self.free_min)} MB, median {_mb(self.free_median)} MB, "
                f"max {_mb(self.free_max)} MB"
            )
        if self.committed_min is not None:
            memory += (
                f"; ksmtuned committed min {_mb(self.committed_min)} MB, median "
                f"{_mb(self.committed_median)} MB, max {_mb(self.committed_max)} MB"
            )
        if self.threshold_min is not None:
            low, high = _mb(self.threshold_min), _mb(self.threshold_max)
            memory += f", threshold {low if low == high else f'{low} to {high}'} MB"
        return (
            f"{DIRECTIONS[self.state]} (-> {self.state.value}): {self.edges} ({causes}); {memory}"
        )


# Printed under the summary, so every row's cause can be checked by eye.
RULE = (
    "ksmtuned stops KSM when committed + threshold < total and free > threshold, "
    "and starts it otherwise."
)


def spread(edges: Sequence[Transition], field: str) -> tuple[int | None, int | None, int | None]:
    """min, median, max of a byte figure over the edges that have it; None each for none."""
    values = [v for v in (getattr(t, field) for t in edges) if v is not None]
    if not values:
        return None, None, None
    return min(values), int(statistics.median(values)), max(values)


def summary(history: Sequence[Transition]) -> list[Direction]:
    out = []
    for state in DIRECTIONS:  # starts first
        edges = [t for t in history if t.to_state is state]
        if not edges:
            continue
        causes = Counter(t.cause for t in edges)
        free = spread(edges, "mem_free_bytes")
        committed = spread(edges, "ksmtuned_committed_bytes")
        thresholds = spread(edges, "ksmtuned_threshold_bytes")
        out.append(
            Direction(
                state=state,
                edges=len(edges),
                causes={c.value: causes[c] for c in Cause if causes[c]},
                free_min=free[0],
                free_median=free[1],
                free_max=free[2],
                committed_min=committed[0],
                committed_median=committed[1],
                committed_max=committed[2],
                threshold_min=thresholds[0],
                threshold_max=thresholds[2],
            )
        )
    return out


def run(args: argparse.Namespace) -> int:
    try:
        if args.state_file is not None:
            history, problems = from_state_file(args.state_file)
            source = str(args.state_file)
        else:
            source = transitions_url(args.url)
            history, problems = from_url(source)
    except SourceError as e:  # a reason phrase, a path: escaped for the terminal
        print(f"{PROG}: {shown(str(e))}", file=sys.stderr)
        return 1
    if args.plot is not None:
        return plot(args, history, problems)
    if args.json:
        doc = {
            "transitions": [t.to_json() for t in history],
            "summary": [d.to_json() for d in summary(history)],
        }
        print(json.dumps(doc, indent=1))
    elif history:
        print("\n".join(table(history)))
        print()
        print("\n".join(d.line() for d in summary(history)))
        print(RULE)
    else:
        print("No change of the KSM run state recorded.")
    if problems:
        # What could be read is printed above; the rest is named here, on one line.
        print(
            f"{PROG}: {shown(source)}: skipped {shown('; '.join(problems))}",
            file=sys.stderr,
        )
        return 1
    return 0


def plot(args: argparse.Namespace, history: list[Transition], problems: list[str]) -> int:
    """--plot FILE: the landing page's picture from the exporter's history (/history, or
    the file beside --state.file), else from what the edges alone tell."""
    series = None
    try:
        if args.state_file is None:
            series = series_from_url(args.url)
        else:
            series = series_from_file(history_path(args.state_file), problems)
    except SourceError as e:  # no history: the edges still draw
        problems.append(f"{e}; drawn from the edges alone")
    try:
        write_picture(args.plot, history, series, time.time())
    except PictureError as e:
        print(f"{PROG}: --plot {shown(str(args.plot))}: {shown(str(e))}", file=sys.stderr)
        return 1
    print(f"Wrote {shown(str(args.plot))} ({len(history)} transitions).")
    if problems:
        print(f"{PROG}: skipped {shown('; '.join(problems))}", file=sys.stderr)
        return 1
    return 0
