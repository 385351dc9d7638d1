"""Is the exporter alive: does the watcher poll on time, and does the HTTP loop turn?

/-/healthy and the systemd watchdog ask the same question. Neither waits on a read: the
watcher's last poll time and the loop's last turn are plain numbers."""

from __future__ import annotations

from collections.abc import Callable

# The HTTP loop turns at least once a second when idle (server.MAX_POLL_SECONDS), and never
# waits on a read or a bcrypt check: ten seconds without a turn is a wedged loop.
HTTP_STALL_SECONDS = 10.0


class Liveness:
    def __init__(
        self,
        watcher_health: Callable[[], tuple[bool, str]],
        seconds_since_turn: Callable[[], float] | None = None,
        http_stall_after: float = HTTP_STALL_SECONDS,
    ) -> None:
        self.watcher_health = watcher_health
        # Set once the server exists (it is built with the app that answers with this).
        self.seconds_since_turn = seconds_since_turn
        self.http_stall_after = http_stall_after

    def __call__(self) -> tuple[bool, str]:
        """(every part makes progress, "OK" or which part is stuck)."""
        ok, why = self.watcher_health()
        late = 0.0 if self.seconds_since_turn is None else self.seconds_since_turn()
        stuck = [] if ok else [why]
        if late > self.http_stall_after:
            stuck.append(f"HTTP loop stalled: no turn for {late:.0f}s")
        return (not stuck, "; ".join(stuck) or "OK")
