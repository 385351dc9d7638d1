"""Is the exporter alive: does the watcher poll on time, and does the HTTP loop turn?

/-/healthy and the systemd watchdog ask the same question. Neither waits on a read: the
watcher's last poll time and the loop's last turn are plain numbers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

# The HTTP loop turns at least once a second when idle (server.MAX_POLL_SECONDS), and never
# waits on a read or a bcrypt check: ten seconds without a turn is a wedged loop.
HTTP_STALL_SECONDS = 10.0


class Health(NamedTuple):
    """Whether every part makes progress, and a line saying so ("OK" or what is stuck)."""

    ok: bool
    why: str


OK = Health(True, "OK")


class Heartbeat:
    """When a loop last completed a turn, and how many it completed. The loop beats;
    liveness (and a test waiting for the loop to have read what it sent) reads. Written
    by the loop's thread alone."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.beats = 0

    def beat(self) -> None:
        self.last = time.monotonic()
        self.beats += 1

    def seconds_since(self) -> float:
        return time.monotonic() - self.last


class Liveness:
    def __init__(
        self,
        watcher_health: Callable[[], Health],
        http_loop: Heartbeat,
        http_stall_after: float = HTTP_STALL_SECONDS,
    ) -> None:
        self.watcher_health = watcher_health
        self.http_loop = http_loop  # the same object the server beats
        self.http_stall_after = http_stall_after

    def __call__(self) -> Health:
        """OK, or which part is stuck."""
        watcher = self.watcher_health()
        late = self.http_loop.seconds_since()
        stuck = [] if watcher.ok else [watcher.why]
        if late > self.http_stall_after:
            stuck.append(f"HTTP loop stalled: no turn for {late:.0f}s")
        return Health(False, "; ".join(stuck)) if stuck else OK
