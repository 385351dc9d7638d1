"""Settle detection: has merging finished, i.e. has pages_sharing stopped moving?

A manual KSM test waits "until pages_sharing is stable" by eye. Here KSM counts as
settled while it runs and pages_sharing, sampled when each full scan completes, moved by
less than TOLERANCE over the last K completed full scans (--collector.settle.full-scans):
the highest and lowest of those samples differ by less than 1% of the highest (or not at all).

Samples come from the watcher's polls (every --watch.interval), so the sample
for a scan is pages_sharing at the first look after full_scans went up. The first look
after KSM starts (or after the exporter starts) is the reference the first scans are
compared with. The settle duration is the time from the latest change into running to
the first look that found KSM settled; it stays after KSM stops, until the next start.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from ksm_exporter.model.defaults import SETTLE_FULL_SCANS
from ksm_exporter.model.derived import RunState, run_state
from ksm_exporter.state.snapshot import Snapshot

DEFAULT_FULL_SCANS = SETTLE_FULL_SCANS
TOLERANCE = 0.01


@dataclass(frozen=True)
class SettleState:
    settled: bool
    duration_seconds: float | None  # None until settled after a start the exporter saw
    full_scans: int  # K


class ScanSample(NamedTuple):
    """pages_sharing at the first look after full_scans reached this count."""

    full_scans: int
    pages_sharing: int


def stable(values: list[int], tolerance: float = TOLERANCE) -> bool:
    high, low = max(values), min(values)
    return high == low or high - low < tolerance * high


class SettleTracker:
    def __init__(self, full_scans: int = DEFAULT_FULL_SCANS) -> None:
        if full_scans < 1:
            raise ValueError("full_scans must be at least 1")
        self.full_scans = full_scans
        self._lock = threading.Lock()
        self._running: bool | None = None  # None: not looked at yet
        self._started_at: float | None = None  # the latest change into running
        self._samples: deque[ScanSample] = deque()
        self._settled = False
        self._duration: float | None = None
        self._last_seen = float("-inf")

    def observe_snapshot(self, snap: Snapshot) -> None:
        """A KsmMonitor snapshot observer."""
        values = snap.ksm.values
        self.observe(snap.taken_at, snap.run, values.get("full_scans"), values.get("pages_sharing"))

    def observe(
        self,
        timestamp: float,
        run: int | None,
        full_scans: int | None,
        pages_sharing: int | None,
    ) -> None:
        with self._lock:
            # A look older than the last (a caller's clock going back) changes nothing.
            if timestamp < self._last_seen:
                return
            self._last_seen = timestamp
            if run is not None:
                self._observe_run(timestamp, run_state(run) is RunState.RUNNING)
            if self._running and full_scans is not None and pages_sharing is not None:
                self._observe_scans(timestamp, full_scans, pages_sharing)

    def _observe_run(self, timestamp: float, running: bool) -> None:
        if running and self._running is False:
            self._started_at = timestamp
            self._duration = None
        if not running:
            self._started_at = None
        if running != self._running:
            self._samples.clear()
            self._settled = False
        self._running = running

    def _observe_scans(self, timestamp: float, full_scans: int, pages_sharing: int) -> None:
        samples = self._samples
        if samples and full_scans < samples[-1].full_scans:  # the counter went back: start over
            samples.clear()
            self._settled = False
        if samples and full_scans == samples[-1].full_scans:
            return  # mid-scan: settled changes only when a scan completes
        samples.append(ScanSample(full_scans, pages_sharing))
        # Keep one sample at or before K scans ago: the start of the window.
        window_start = full_scans - self.full_scans
        while len(samples) > 1 and samples[1].full_scans <= window_start:
            samples.popleft()
        self._settled = samples[0].full_scans <= window_start and stable(
            [s.pages_sharing for s in samples]
        )
        if self._settled and self._duration is None and self._started_at is not None:
            self._duration = timestamp - self._started_at

    def state(self) -> SettleState:
        with self._lock:
            return SettleState(
                settled=self._settled,
                duration_seconds=self._duration,
                full_scans=self.full_scans,
            )
