"""The one place where readers, snapshots and the transition tracker meet.

Both the watcher thread (every --watch.interval: `run` and memory only) and each scrape
(every file, read fresh) go through here, so a change of state is recorded once, with the
memory at that moment, whichever of them sees it first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ksm_exporter.model.derived import page_size
from ksm_exporter.readers import Paths, describe_error
from ksm_exporter.readers.edge_inputs import EdgeExplainer
from ksm_exporter.readers.meminfo import MemInfo, read_meminfo
from ksm_exporter.readers.sysfs_ksm import read_ksm
from ksm_exporter.state.snapshot import Snapshot
from ksm_exporter.state.state_file import StateFile
from ksm_exporter.state.transitions import TrackerState, Transition, TransitionTracker

log = logging.getLogger(__name__)

MEMINFO = "meminfo"  # the read-error label for <procfs>/meminfo

TransitionListener = Callable[[Transition], None]
SnapshotObserver = Callable[[Snapshot], None]


class ReadErrors:
    """Failed reads per file, for ksm_exporter_read_errors_total{file}. Logs a file when
    it starts failing and when it recovers, not at every poll."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._failing: set[str] = set()

    def record(self, read: set[str], errors: dict[str, str], count: bool) -> None:
        """`read`: files this pass tried; `errors`: those that failed, with why. Only
        scrapes count (`count`), so the counter means "scrapes that skipped this file",
        whatever the watcher's interval."""
        with self._lock:
            for name, why in errors.items():
                if count:
                    self._counts[name] = self._counts.get(name, 0) + 1
                if name not in self._failing:
                    self._failing.add(name)
                    log.warning("skipping %s: %s", name, why)
            for name in (read & self._failing) - errors.keys():
                self._failing.discard(name)
                log.info("%s readable again", name)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class KsmMonitor:
    def __init__(
        self,
        paths: Paths,
        tracker: TransitionTracker,
        state_file: StateFile | None = None,
        explain_edge: EdgeExplainer | None = None,
    ) -> None:
        self.paths = paths
        self.tracker = tracker
        self.state_file = state_file
        self.explain_edge = explain_edge
        self.read_errors = ReadErrors()
        self.page_size = page_size()
        self._listeners: list[TransitionListener] = []
        self._observers: list[SnapshotObserver] = []
        # Detect, persist and announce one edge at a time, so the state file and the log
        # see edges in the order they happened.
        self._edge_lock = threading.Lock()

    def add_listener(self, listener: TransitionListener) -> None:
        """Called with each new transition, after it is saved to --state.file."""
        self._listeners.append(listener)

    def add_snapshot_observer(self, observer: SnapshotObserver) -> None:
        """Called with every snapshot, the watcher's polls and the scrapes (settle detection)."""
        self._observers.append(observer)

    # What the watcher reads every interval: the run state, and the two counters that say
    # how far merging has got (for settle detection), not the whole directory.
    POLLED_FILES = ("run", "full_scans", "pages_sharing")

    def poll(self) -> Snapshot:
        """The watcher's cheap look: `run`, full_scans, pages_sharing and memory."""
        return self._take(only=self.POLLED_FILES, count_errors=False)

    def scrape(self) -> Snapshot:
        """Every KSM file, read fresh for a scrape."""
        return self._take(only=None, count_errors=True)

    def tracker_state(self) -> TrackerState:
        return self.tracker.state()

    def _take(self, only: tuple[str, ...] | None, count_errors: bool) -> Snapshot:
        ksm = read_ksm(self.paths.ksm_dir, only=only)
        errors = dict(ksm.errors)
        try:
            memory: MemInfo | None = read_meminfo(self.paths.procfs)
        except (OSError, ValueError) as e:
            memory = None
            errors[MEMINFO] = describe_error(e)
        snap = Snapshot(taken_at=time.time(), ksm=ksm, memory=memory, page_size=self.page_size)
        tried = set(ksm.raw) | set(ksm.errors) | {MEMINFO}
        self.read_errors.record(tried, errors, count_errors)
        if snap.run is not None:
            self._observe(snap.run, memory, snap.taken_at)
        for observe in self._observers:
            observe(snap)
        return snap

    def _observe(self, run: int, memory: MemInfo | None, taken_at: float) -> None:
        with self._edge_lock:
            context = None
            if self.explain_edge is not None and self.tracker.is_edge(run):
                try:
                    context = self.explain_edge(run, memory)
                except Exception:  # the edge is recorded all the same, its cause unknown
                    log.exception("reading who made the edge failed")
            t = self.tracker.observe(run, memory, taken_at, context)
            if t is None:
                return
            if self.state_file is not None:
                self.state_file.save(self.tracker.state().history)
            for listener in self._listeners:
                try:
                    listener(t)
                except Exception:  # a broken listener must not stop the watcher
                    log.exception("transition listener failed")
