"""PATH.history beside --state.file PATH: the chart's points, kept across restarts.

One JSON array per line: the step of the ring it belongs to (5, 60 or 600 seconds), the
time, then the history's columns (null where not observed, as /history answers them);
each ring's points oldest first, so a restart puts back exactly what was kept. The watcher
saves it every SAVE_EVERY_SECONDS (a restart loses at most that much of the picture; the
edges are in the state file), as the state file is saved: a private temporary file,
fsync, rename.

Read as the state file is (anything may be in it): at most its last 8 MiB, a FIFO or a
device refused, each line bounded, parsed with bounded nesting and numbers, and checked
against what the watcher writes (a time up to a day ahead of the clock, each figure in the
state file's range for it, times increasing); a line that is not such a point is
dropped and counted in ksm_exporter_state_file_errors_total, with one log line. A file
that cannot be read is never overwritten.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ksm_exporter.model import bounded_json
from ksm_exporter.model.chart import COLUMNS
from ksm_exporter.model.numbers import U64_MAX, bounded_float
from ksm_exporter.state.history import TIERS, History
from ksm_exporter.state.snapshot import Snapshot
from ksm_exporter.state.state_file import (
    NOT_READ,
    StateFile,
    read_tail,
    remove_stale_temporaries,
    replace_file,
)
from ksm_exporter.state.transitions import BYTE_FIGURES, FUTURE_MARGIN_SECONDS, RUN_MAX

log = logging.getLogger(__name__)

SAVE_EVERY_SECONDS = 300.0
STEPS = tuple(t.step for t in TIERS)
SUFFIX = ".history"
MAX_LINE_BYTES = 512  # 8 numbers of at most 24 characters each, and brackets and commas
# What the watcher can write in each column: the state file's ranges for the figures it
# shares, pages_sharing (u64) times a page (at most 64 KiB) for the savings.
RANGES = {
    **{c: BYTE_FIGURES[c] for c in COLUMNS if c in BYTE_FIGURES},
    "saved_bytes": (0, U64_MAX * 2**16),
    "run": (0, RUN_MAX),
}


def history_path(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + SUFFIX)


Saved = list[tuple[float, list[float]]]  # (ring step, point)


def parse_point(value: object, steps: Sequence[float], now: float) -> tuple[float, list[float]]:
    """One line's (step, point); ValueError says what is wrong with it."""
    if not isinstance(value, list) or len(value) != len(COLUMNS) + 2:
        raise ValueError(f"not a list of {len(COLUMNS) + 2} numbers or nulls")
    step = value[0]
    if isinstance(step, bool) or step not in steps:
        raise ValueError(f"step: not one of {', '.join(f'{s:g}' for s in steps)}")
    point = [bounded_float(value[1], "time", 0, now + FUTURE_MARGIN_SECONDS)]
    for name, v in zip(COLUMNS, value[2:]):
        low, high = RANGES[name]
        point.append(math.nan if v is None else bounded_float(v, name, low, high))
    return float(step), point


def parse_points(data: bytes, steps: Sequence[float], now: float) -> tuple[Saved, Counter[str]]:
    """The well-formed (step, point) lines of `data`, and how many were dropped why."""
    points: Saved = []
    latest: dict[float, float] = {}  # the time of each ring's last point kept
    dropped: Counter[str] = Counter()
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        why = ""
        try:
            if len(line) > MAX_LINE_BYTES:
                raise ValueError("too long")
            step, point = parse_point(bounded_json.loads(line.decode("utf-8")), steps, now)
            if point[0] <= latest.get(step, -math.inf):
                raise ValueError("not after the ring's line before")
            latest[step] = point[0]
            points.append((step, point))
        except UnicodeDecodeError:
            why = "not UTF-8"
        except ValueError as e:  # not JSON, or not a point
            why = str(e)
        if why:
            dropped[why] += 1
    return points, dropped


def read_points(
    path: Path, now: float, steps: Sequence[float] = STEPS
) -> tuple[Saved, Counter[str]]:
    """parse_points of the file's last 8 MiB. Raises OSError."""
    data, skipped = read_tail(path)
    points, dropped = parse_points(data, steps, now)
    if skipped:
        dropped[NOT_READ] += 1
    return points, dropped


class HistoryFile:
    """Saved and loaded by the watcher thread alone; errors are counted with the state
    file's (`counted`)."""

    def __init__(self, path: Path, history: History, counted: StateFile) -> None:
        self.path = path
        self.history = history
        self.counted = counted
        self._unread: str | None = None
        self._saved_at: float | None = None

    def load(self) -> None:
        """Put the saved points into the history. Never raises."""
        try:
            points, dropped = read_points(self.path, time.time(), self.history.steps())
        except FileNotFoundError:
            return
        except OSError as e:
            self._unread = e.strerror or str(e)
            self.counted.errors += 1
            log.error(
                "cannot read %s: %s; the picture starts empty and the file will not be "
                "overwritten (fix or remove it, then restart)",
                self.path,
                self._unread,
            )
            return
        if dropped:
            self.counted.errors += sum(dropped.values())
            log.warning(
                "%s: %d lines dropped (%s), %d points kept",
                self.path,
                sum(dropped.values()),
                ", ".join(f"{why}: {n}" for why, n in sorted(dropped.items())),
                len(points),
            )
        self.history.restore(points)
        remove_stale_temporaries(self.path)

    def observe(self, snap: Snapshot) -> None:
        """A snapshot observer (after History.observe): save every SAVE_EVERY_SECONDS."""
        if self._saved_at is None:
            self._saved_at = snap.taken_at
        elif snap.taken_at - self._saved_at >= SAVE_EVERY_SECONDS:
            self._saved_at = snap.taken_at
            self.save()

    def save(self) -> bool:
        if self._unread is not None:
            self.counted.errors += 1
            return False
        lines = [
            json.dumps([step, *(None if math.isnan(v) else v for v in point)]) + "\n"
            for step, point in self.history.saved_points()
        ]
        try:
            replace_file(self.path, "".join(lines).encode())
        except OSError as e:
            self.counted.errors += 1
            log.error("cannot save %s: %s (the picture is kept in memory)", self.path, e)
            return False
        return True
