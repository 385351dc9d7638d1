"""The node's recent KSM story for the landing page's chart: memory, ksmtuned's free figure
and threshold, KSM's savings and run state, kept by the watcher (the one writer).

A fixed memory budget: three rings of preallocated float arrays, each fed every poll and
averaging the polls of one bucket into one point. The finest keeps 5 s points for the
last hour, the next 1 min points for a day, the coarsest 10 min points for a week; the
view takes each time from the finest ring that still holds it. What was not observed is
NaN, never 0. The edges are not sampled here: the chart takes them exactly from the
transition history.
"""

from __future__ import annotations

import math
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ksm_exporter.model.chart import COLUMNS, Mark, Series
from ksm_exporter.model.derived import KIB, saved_bytes
from ksm_exporter.model.edge_cause import cause_text, edge_rule_text
from ksm_exporter.readers.ksmtuned import free_kb
from ksm_exporter.state.snapshot import Snapshot
from ksm_exporter.state.transitions import Transition

NAN = float("nan")


@dataclass(frozen=True)
class Tier:
    step: float  # seconds a point stands for
    points: int  # how many the ring keeps


# 1 h of 5 s points, a day of 1 min points, a week of 10 min points.
TIERS = (Tier(5.0, 720), Tier(60.0, 1440), Tier(600.0, 1008))
FIELDS = ("time", *COLUMNS)  # time, then the chart's columns, each one float per point


def budget_bytes(tiers: Sequence[Tier] = TIERS) -> int:
    """The arrays' size: 8 bytes per field per point, whatever the polls say."""
    return sum(t.points for t in tiers) * len(FIELDS) * 8


class _Ring:
    """One tier: a ring of points (a column per field) and the bucket being averaged."""

    def __init__(self, tier: Tier) -> None:
        self.tier = tier
        self.columns = [array("d", [NAN]) * tier.points for _ in FIELDS]
        self.start = 0  # index of the oldest point
        self.size = 0
        self.bucket: int | None = None  # floor(time / step) of the open bucket
        self.sums = [0.0] * len(FIELDS)
        self.counts = [0] * len(FIELDS)

    def add(self, values: Sequence[float]) -> bool:
        """Average `values` into its bucket; True when an earlier bucket closed."""
        bucket = math.floor(values[0] / self.tier.step)
        closed = self.bucket is not None and bucket != self.bucket
        if closed:
            self._close()
        self.bucket = bucket
        for i, v in enumerate(values):
            if not math.isnan(v):
                self.sums[i] += v
                self.counts[i] += 1
        return closed

    def open_point(self) -> list[float] | None:
        if not self.counts[0]:
            return None
        return [s / n if n else NAN for s, n in zip(self.sums, self.counts)]

    def _close(self) -> None:
        point = self.open_point()
        self.sums = [0.0] * len(FIELDS)
        self.counts = [0] * len(FIELDS)
        if point is not None:
            self.put(point)

    def reopen(self, point: Sequence[float]) -> None:
        """Make `point` the open bucket again (the newest point of a saved ring)."""
        self.bucket = math.floor(point[0] / self.tier.step)
        self.sums = [0.0 if math.isnan(v) else v for v in point]
        self.counts = [0 if math.isnan(v) else 1 for v in point]

    def put(self, point: Sequence[float]) -> None:
        """Append a closed point (the newest)."""
        n = self.tier.points
        at = (self.start + self.size) % n
        for column, v in zip(self.columns, point):
            column[at] = v
        if self.size < n:
            self.size += 1
        else:
            self.start = (self.start + 1) % n

    def columns_now(self) -> list[list[float]]:
        """A copy of each field, oldest first, the open bucket last."""
        n, start, size = self.tier.points, self.start, self.size
        out = []
        for column in self.columns:
            ordered = column[start:] + column[:start] if size == n else column[:size]
            out.append(ordered.tolist())
        last = self.open_point()
        if last is not None:
            for values, v in zip(out, last):
                values.append(v)
        return out


def point_of(snap: Snapshot, threshold: int | None) -> list[float]:
    """A poll as the history's fields; NaN for what it could not read."""
    mem = snap.memory
    sharing = snap.ksm.values.get("pages_sharing")
    run = snap.run
    return [
        snap.taken_at,
        NAN if mem is None else float(mem.free),
        NAN if mem is None or mem.available is None else float(mem.available),
        NAN if mem is None else float(free_kb(mem) * KIB),
        NAN if threshold is None or mem is None else float(threshold),
        NAN if sharing is None else float(saved_bytes(sharing, snap.page_size)),
        NAN if run is None else float(run),
    ]


class History:
    """Written by the watcher thread only (observe, note_edge); read by any thread."""

    def __init__(self, restored: Iterable[Transition] = (), tiers: Sequence[Tier] = TIERS):
        self._lock = threading.Lock()
        self._rings = [_Ring(t) for t in tiers]
        self.version = 0  # bumped when a point is added: a rendered chart is stale
        # ksmtuned's threshold depends on ksmtuned.conf and MemTotal, read at each edge:
        # the latest edge's figure holds until the next (none known before the first).
        self._threshold: int | None = None
        for t in restored:
            self.note_edge(t)

    def note_edge(self, t: Transition) -> None:
        """A transition listener: keep the threshold ksmtuned had at the latest edge."""
        if t.ksmtuned_threshold_bytes is not None:
            self._threshold = t.ksmtuned_threshold_bytes

    def observe(self, snap: Snapshot) -> None:
        """A snapshot observer: one poll."""
        values = point_of(snap, self._threshold)
        with self._lock:
            for ring in self._rings:
                ring.add(values)
            self.version += 1

    def steps(self) -> list[float]:
        return [ring.tier.step for ring in self._rings]

    def saved_points(self) -> list[tuple[float, list[float]]]:
        """Every ring's points (step, point), the open buckets as points: what a restart
        puts back with restore()."""
        with self._lock:
            rings = [(ring.tier.step, ring.columns_now()) for ring in self._rings]
        return [(step, list(point)) for step, columns in rings for point in zip(*columns)]

    def restore(self, points: Iterable[tuple[float, Sequence[float]]]) -> None:
        """Points saved before a restart (saved_points), oldest first within each ring."""
        by_step: dict[float, list[Sequence[float]]] = {r.tier.step: [] for r in self._rings}
        for step, point in points:
            by_step[step].append(point)
        with self._lock:
            for ring in self._rings:
                saved = by_step[ring.tier.step]
                for point in saved[:-1]:
                    ring.put(point)
                if saved:  # the newest was the open bucket (saved_points)
                    ring.reopen(saved[-1])
            self.version += 1

    def series(self, since: float | None = None) -> Series:
        """The points from `since` on, oldest first: each time from the finest ring that
        still holds it."""
        with self._lock:
            rings = [ring.columns_now() for ring in self._rings]
        merged = rings[0]
        for coarser in rings[1:]:  # only what is older than what the finer rings hold
            oldest = merged[0][0] if merged[0] else math.inf
            keep = bisect_left(coarser[0], oldest)
            merged = [c[:keep] + m for c, m in zip(coarser, merged)]
        if since is not None:
            first = bisect_left(merged[0], since)
            merged = [c[first:] for c in merged]
        return Series(merged[0], dict(zip(COLUMNS, merged[1:])))


def marks_of(history: Iterable[Transition]) -> list[Mark]:
    """The recorded edges as the chart's markers: ksmtuned's free figure at the edge where
    it was read, else MemFree."""
    marks = []
    for t in history:
        free = t.ksmtuned_free_bytes if t.ksmtuned_free_bytes is not None else t.mem_free_bytes
        before = t.from_state.value if t.from_state else "?"
        label = (
            f"{datetime.fromtimestamp(t.timestamp).strftime('%Y-%m-%d %H:%M:%S')} "
            f"{before} -> {t.to_state.value}, cause: {cause_text(t.cause, t.controller)}; "
            f"ksmtuned (MB): {edge_rule_text(t)}"
        )
        marks.append(Mark(t.timestamp, t.to_state.value, t.cause.value, label, free))
    return marks


def series_of_edges(history: Sequence[Transition]) -> Series:
    """What a --state.file alone tells: the memory at each edge, and the state after it."""

    def f(v: int | None) -> float:
        return NAN if v is None else float(v)

    return Series.from_rows(
        [
            [
                t.timestamp,
                f(t.mem_free_bytes),
                f(t.mem_available_bytes),
                f(t.ksmtuned_free_bytes),
                f(t.ksmtuned_threshold_bytes),
                NAN,
                float(t.run),
            ]
            for t in history
        ]
    )
