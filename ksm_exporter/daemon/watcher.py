"""The background thread that polls `run` and memory so no edge between scrapes is missed."""

from __future__ import annotations

import logging
import threading
import time

from ksm_exporter.state.monitor import KsmMonitor
from ksm_exporter.state.snapshot import Snapshot

log = logging.getLogger(__name__)


def stall_threshold(interval: float) -> float:
    """How late a poll may be before the watcher counts as stalled: three intervals, and
    never less than the interval plus two seconds, so a busy machine is not a stall."""
    return max(3 * interval, interval + 2.0)


class Watcher:
    def __init__(self, monitor: KsmMonitor, interval: float) -> None:
        self.monitor = monitor
        self.interval = interval
        self.stall_after = stall_threshold(interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ksm-watcher", daemon=True)
        self.polls = 0
        # Set at start: a watcher that never completes its first poll stalls too.
        self.last_poll = time.monotonic()
        self.last: Snapshot | None = None  # the latest poll's reading, for systemd's STATUS=

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def seconds_since_poll(self) -> float:
        return time.monotonic() - self.last_poll

    def healthy(self) -> bool:
        return self.seconds_since_poll() <= self.stall_after

    def health(self) -> tuple[bool, str]:
        """For /-/healthy: whether the watcher polls on time, and a line saying so."""
        late = self.seconds_since_poll()
        if late <= self.stall_after:
            return True, "OK"
        return False, f"watcher stalled: last poll {late:.1f}s ago"

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.last = self.monitor.poll()
                self.polls += 1
                self.last_poll = time.monotonic()
            except Exception:  # keep watching; /-/healthy turns 503 if this persists
                log.exception("watcher poll failed")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
