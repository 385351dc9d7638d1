"""Run-state transitions: what checkKSM_start_time.sh logged by hand."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

from ksm_exporter.model.derived import RunState, run_state
from ksm_exporter.model.watch_format import watch_message
from ksm_exporter.readers.meminfo import MemInfo

# Bounds of a well-formed --state.file entry. Memory figures above 2^60 bytes (an exbibyte)
# are no machine's; a time more than a day ahead of the clock was not written by this
# clock (a day leaves room for a clock stepped back by NTP or a time zone mistake).
MAX_BYTES = 2**60
FUTURE_MARGIN_SECONDS = 86400.0


class BadEntry(ValueError):
    """A --state.file entry that is not well-formed; the message says which field."""


def _whole(value: object, key: str, low: int, high: int) -> int:
    """An integer (not a bool, not a float) in [low, high], else BadEntry."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadEntry(f"{key}: not a whole number from {low} to {high}")
    return value


def _state(value: object, key: str) -> RunState | None:
    if value is None:
        return None
    try:
        return RunState(value)
    except (ValueError, TypeError):  # TypeError: a list or an object
        raise BadEntry(f"{key}: not one of {', '.join(s.value for s in RunState)}") from None


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
    def from_json(cls, d: object, now: float | None = None) -> Transition:
        """An entry of --state.file (a parsed JSON line); BadEntry says what is wrong.
        Keys it does not know are ignored, so a file written by a newer version loads."""
        if not isinstance(d, dict):
            raise BadEntry("not a JSON object")
        for key, value in d.items():  # generic: every byte figure, known or to come
            if isinstance(key, str) and key.endswith("_bytes") and value is not None:
                _whole(value, "a memory figure (*_bytes)", 0, MAX_BYTES)
        timestamp = d.get("timestamp")
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
            raise BadEntry("timestamp: not a number")
        latest = (time.time() if now is None else now) + FUTURE_MARGIN_SECONDS
        if not (math.isfinite(timestamp) and 0 <= timestamp <= latest):
            raise BadEntry("timestamp: not a finite time between 1970 and now")
        run = _whole(d.get("run"), "run", 0, 2**32 - 1)  # the kernel's unsigned int
        to_state = _state(d.get("to"), "to")
        if to_state is None or to_state is not run_state(run):
            raise BadEntry("to: not the state of run")
        return cls(
            timestamp=float(timestamp),
            from_state=_state(d.get("from"), "from"),
            to_state=to_state,
            run=run,
            mem_total_bytes=d.get("mem_total_bytes"),  # type: ignore[arg-type]
            mem_used_bytes=d.get("mem_used_bytes"),  # type: ignore[arg-type]
            mem_free_bytes=d.get("mem_free_bytes"),  # type: ignore[arg-type]
            mem_available_bytes=d.get("mem_available_bytes"),  # type: ignore[arg-type]
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
