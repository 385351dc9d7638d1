"""The one writer: the watcher thread's look at KSM, and everything that follows from it.

Only KsmMonitor.poll(), called by the watcher thread alone, observes the run state,
records edges, saves --state.file, announces transitions (log, journal) and feeds settle
detection. Scrapes read their own sources and render; they never come through here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ksm_exporter.model.derived import page_size
from ksm_exporter.readers import Paths, describe_error
from ksm_exporter.readers.edge_inputs import EdgeExplainer
from ksm_exporter.readers.meminfo import MEMINFO, MemInfo, read_meminfo
from ksm_exporter.readers.sysfs_ksm import read_ksm
from ksm_exporter.state.bounded_reads import BoundedExplainer
from ksm_exporter.state.read_errors import ReadErrors
from ksm_exporter.state.snapshot import Snapshot
from ksm_exporter.state.state_file import StateFile
from ksm_exporter.state.transitions import TrackerState, Transition, TransitionTracker

log = logging.getLogger(__name__)

TransitionListener = Callable[[Transition], None]
SnapshotObserver = Callable[[Snapshot], None]

# What the watcher reads every interval: the run state, and the two counters that say how
# far merging has got (for settle detection and the landing page), not the whole directory:
# a hung read of any other KSM file then stalls only the scrape's ksm collector.
POLLED_FILES = ("run", "full_scans", "pages_sharing")


class KsmMonitor:
    def __init__(
        self,
        paths: Paths,
        tracker: TransitionTracker,
        read_errors: ReadErrors,
        state_file: StateFile | None = None,
        explain_edge: EdgeExplainer | None = None,
    ) -> None:
        self.paths = paths
        self.tracker = tracker
        self.read_errors = read_errors
        self.state_file = state_file
        # Who made each edge, read off the watcher's path within a bounded time.
        self.explain_edge = BoundedExplainer(explain_edge) if explain_edge else None
        self.page_size = page_size()
        self._listeners: list[TransitionListener] = []
        self._observers: list[SnapshotObserver] = []

    def add_listener(self, listener: TransitionListener) -> None:
        """Called with each new transition, after it is saved to --state.file."""
        self._listeners.append(listener)

    def add_snapshot_observer(self, observer: SnapshotObserver) -> None:
        """Called with every poll's snapshot (settle detection)."""
        self._observers.append(observer)

    def tracker_state(self) -> TrackerState:
        return self.tracker.state()

    def poll(self) -> Snapshot:
        """One look: `run`, full_scans, pages_sharing and memory at one moment. Read
        errors are logged (through the notices) but not counted: the counter counts
        scrapes, whatever the watch interval."""
        ksm = read_ksm(self.paths.ksm_dir, only=POLLED_FILES)
        errors = dict(ksm.errors)
        try:
            memory: MemInfo | None = read_meminfo(self.paths.procfs)
        except (OSError, ValueError) as e:
            memory = None
            errors[MEMINFO] = describe_error(e)
        snap = Snapshot(taken_at=time.time(), ksm=ksm, memory=memory, page_size=self.page_size)
        tried = set(ksm.raw) | set(ksm.errors) | {MEMINFO}
        self.read_errors.watcher_read(tried, errors)
        if snap.run is not None:
            self._observe(snap.run, memory, snap.taken_at)
        for observe in self._observers:
            observe(snap)
        return snap

    def _observe(self, run: int, memory: MemInfo | None, taken_at: float) -> None:
        context = None
        if self.explain_edge is not None and self.tracker.is_edge(run):
            context = self.explain_edge(run, memory)
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
