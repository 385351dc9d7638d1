"""The watcher thread: the one writer. It polls `run` and memory every --watch.interval, so
no edge between scrapes is missed, and it alone records edges, saves the state file, logs
and journals transitions, feeds settle detection and writes the scrapes' noted log lines."""

from __future__ import annotations

import logging
import threading
import time

from ksm_exporter.daemon.health import OK, Health
from ksm_exporter.daemon.threads import set_native_thread_name
from ksm_exporter.state.monitor import KsmMonitor
from ksm_exporter.state.notices import Notices
from ksm_exporter.state.snapshot import Snapshot

log = logging.getLogger(__name__)

THREAD_NAME = "ksm-watcher"  # also its native name: a test stops just this thread


def stall_threshold(interval: float) -> float:
    """How late a poll may be before the watcher counts as stalled: three intervals, and
    never less than the interval plus two seconds, so a busy machine is not a stall."""
    return max(3 * interval, interval + 2.0)


class Watcher:
    def __init__(self, monitor: KsmMonitor, interval: float, notices: Notices) -> None:
        self.monitor = monitor
        self.interval = interval
        self.notices = notices
        self.stall_after = stall_threshold(interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        # Set at start: a watcher that never completes its first poll stalls too.
        self.last_poll = time.monotonic()
        self.last: Snapshot | None = None  # the latest poll (STATUS=, the landing page)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def seconds_since_poll(self) -> float:
        return time.monotonic() - self.last_poll

    def healthy(self) -> bool:
        return self.seconds_since_poll() <= self.stall_after

    def health(self) -> Health:
        """Whether the watcher polls on time, and a line saying so."""
        late = self.seconds_since_poll()
        if late <= self.stall_after:
            return OK
        return Health(False, f"watcher stalled: no poll for {late:.0f}s")

    def poll_once(self) -> Snapshot:
        """One poll, as the thread does it (tests call it directly)."""
        snap = self.monitor.poll()
        self.last = snap
        self.last_poll = time.monotonic()
        self.notices.flush()
        return snap

    def _run(self) -> None:
        set_native_thread_name(THREAD_NAME)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll_once()
            except Exception:  # keep watching; /-/healthy turns 503 if this persists
                log.exception("watcher poll failed")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
