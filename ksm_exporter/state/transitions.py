"""Run-state transitions: what the seed's checkKSM_start_time.sh logged by hand."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

from ksm_exporter.model.derived import RunState, run_state
from ksm_exporter.model.watch_format import watch_message
from ksm_exporter.readers.meminfo import MemInfo


@dataclass(frozen=True)
class Transition:
    timestamp: float  # Unix seconds
    from_state: RunState | None  # None: the state before was not known (KSM dir was absent)
    to_state: RunState
    run: int
    mem_total_bytes: int | None
    mem_used_bytes: int | None
    mem_free_bytes: int | None
    mem_available_bytes: int | None

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["from"] = self.from_state.value if self.from_state else None
        d["to"] = self.to_state.value
        del d["from_state"], d["to_state"]
        d["time"] = datetime.fromtimestamp(self.timestamp).astimezone().isoformat()
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Transition:
        def opt_int(key: str) -> int | None:
            v = d.get(key)
            return None if v is None else int(v)  # type: ignore[arg-type]

        from_value = d.get("from")
        return cls(
            timestamp=float(d["timestamp"]),  # type: ignore[arg-type]
            from_state=RunState(from_value) if from_value else None,
            to_state=RunState(d["to"]),
            run=int(d["run"]),  # type: ignore[arg-type]
            mem_total_bytes=opt_int("mem_total_bytes"),
            mem_used_bytes=opt_int("mem_used_bytes"),
            mem_free_bytes=opt_int("mem_free_bytes"),
            mem_available_bytes=opt_int("mem_available_bytes"),
        )

    def watch_message(self) -> str:
        """The seed's log line without its time stamp: `KSM is running. N MB used. M MB free.`"""
        # The seed only knew running / not running; unmerging (run=2) is said as such.
        what = {
            RunState.RUNNING: "running",
            RunState.STOPPED: "not running",
            RunState.UNMERGING: "unmerging",
        }[self.to_state]
        return watch_message(what, self.mem_used_bytes, self.mem_free_bytes)


def transition_at(
    timestamp: float, before: RunState | None, run: int, memory: MemInfo | None
) -> Transition:
    return Transition(
        timestamp=timestamp,
        from_state=before,
        to_state=run_state(run),
        run=run,
        mem_total_bytes=memory.total if memory else None,
        mem_used_bytes=memory.used if memory else None,
        mem_free_bytes=memory.free if memory else None,
        mem_available_bytes=memory.available if memory else None,
    )


@dataclass(frozen=True)
class TrackerState:
    """A consistent copy of the tracker for one scrape."""

    current: RunState | None
    counts: dict[RunState, int]
    last: dict[RunState, Transition]
    history: tuple[Transition, ...]


class TransitionTracker:
    """Follows `run` and records each change of state with the memory at that moment.

    The first observation only sets the state: starting the exporter is not a change.
    A time with no readable `run` (KSM directory gone) leaves the state as it was.
    """

    def __init__(self, max_history: int = 100, restored: Iterable[Transition] = ()) -> None:
        self._lock = threading.Lock()
        self._current: RunState | None = None
        self._counts = dict.fromkeys(RunState, 0)
        self._history: deque[Transition] = deque(restored, maxlen=max_history)
        # Restored history gives the latest edge into each state across restarts; the
        # counters start at zero, as a Prometheus counter may after a restart.
        self._last: dict[RunState, Transition] = {t.to_state: t for t in self._history}

    def observe(
        self, run: int, memory: MemInfo | None, timestamp: float | None = None
    ) -> Transition | None:
        state = run_state(run)
        with self._lock:
            before = self._current
            self._current = state
            if before is None or before == state:
                return None
            t = transition_at(time.time() if timestamp is None else timestamp, before, run, memory)
            self._counts[state] += 1
            self._last[state] = t
            self._history.append(t)
            return t

    def state(self) -> TrackerState:
        with self._lock:
            return TrackerState(
                current=self._current,
                counts=dict(self._counts),
                last=dict(self._last),
                history=tuple(self._history),
            )
