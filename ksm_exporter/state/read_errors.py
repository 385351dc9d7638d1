"""Reads that failed: counted for ksm_exporter_read_errors_total{file} and
ksm_process_read_errors_total{reason}, and logged when a file starts failing and when it
recovers, not at every read. The log lines go through Notices, so a scrape never logs.

The one state scrapes write: counters of their own failed reads."""

from __future__ import annotations

import logging
import threading

from ksm_exporter.readers.vm_processes import ProcessReport
from ksm_exporter.state.notices import Notices

log = logging.getLogger(__name__)

VANISHED = "vanished"
UNREADABLE = "unreadable"


class ReadErrors:
    """Failed reads per file, from two writers. A scrape reports its reads
    (`scrape_read`): each failure counts, so ksm_exporter_read_errors_total{file} means
    "scrapes that skipped this file", whatever the watcher's interval. The watcher records
    its looks (`watcher_read`): they count nothing. Both log when a file starts failing
    and when it recovers, once, through the notices."""

    def __init__(self, notices: Notices) -> None:
        self.notices = notices
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._failing: set[str] = set()

    def scrape_read(self, tried: set[str], errors: dict[str, str]) -> None:
        """`tried`: the files a scrape's read tried; `errors`: those that failed, with why."""
        with self._lock:
            for name in errors:
                self._counts[name] = self._counts.get(name, 0) + 1
            self._note_changes(tried, errors)

    def watcher_read(self, tried: set[str], errors: dict[str, str]) -> None:
        """The same for the watcher's look: logged, not counted."""
        with self._lock:
            self._note_changes(tried, errors)

    def _note_changes(self, tried: set[str], errors: dict[str, str]) -> None:
        for name, why in errors.items():
            if name not in self._failing:
                self._failing.add(name)
                self.notices.note(log, logging.WARNING, "skipping %s: %s", name, why)
        for name in (tried & self._failing) - errors.keys():
            self._failing.discard(name)
            self.notices.note(log, logging.INFO, "%s readable again", name)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class ProcessReadErrors:
    """Matched processes not exported because they vanished or could not be read, counted
    since start. Notes when processes start being unreadable (usually: the exporter is not
    root and lacks CAP_DAC_READ_SEARCH), and when they stop, not at every scrape."""

    def __init__(self, notices: Notices) -> None:
        self.notices = notices
        self._lock = threading.Lock()
        self._counts = {VANISHED: 0, UNREADABLE: 0}
        self._failing = False

    def record(self, report: ProcessReport) -> None:
        with self._lock:
            self._counts[VANISHED] += report.vanished
            self._counts[UNREADABLE] += report.unreadable
            if report.unreadable and not self._failing:
                self.notices.note(
                    log,
                    logging.WARNING,
                    "cannot read the KSM state of %d matching processes (run as root or with "
                    "CAP_DAC_READ_SEARCH): %s",
                    report.unreadable,
                    report.first_error,
                )
            elif self._failing and not report.unreadable:
                self.notices.note(
                    log, logging.INFO, "the KSM state of every matching process is readable again"
                )
            self._failing = bool(report.unreadable)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
