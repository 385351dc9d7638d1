"""Run-state transitions: what checkKSM_start_time.sh logged by hand, and who made each."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

from ksm_exporter.model.derived import RunState, run_state
from ksm_exporter.model.edge_cause import Cause, EdgeContext
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
    # ksmtuned's inputs at the edge (None: not observed) and who made the edge
    # (model/edge_cause.py); an edge recorded without them has cause unknown.
    ksmtuned_threshold_bytes: int | None = None
    ksmtuned_committed_bytes: int | None = None
    ksmtuned_free_bytes: int | None = None
    cause: Cause = Cause.UNKNOWN
    controller: str | None = None

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["from"] = self.from_state.value if self.from_state else None
        d["to"] = self.to_state.value
        d["cause"] = self.cause.value
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
            ksmtuned_threshold_bytes=d.get("ksmtuned_threshold_bytes"),  # type: ignore[arg-type]
            ksmtuned_committed_bytes=d.get("ksmtuned_committed_bytes"),  # type: ignore[arg-type]
            ksmtuned_free_bytes=d.get("ksmtuned_free_bytes"),  # type: ignore[arg-type]
            cause=_cause(d.get("cause")),
            controller=_controller(d.get("controller")),
        )

    def log_fields(self) -> dict[str, object]:
        """The fields of the edge's log line and journal entry; what was not observed is
        left out rather than logged as None."""
        fields: dict[str, object | None] = {
            "from": self.from_state.value if self.from_state else "unknown",
            "to": self.to_state.value,
            "run": self.run,
            "mem_used_bytes": self.mem_used_bytes,
            "mem_free_bytes": self.mem_free_bytes,
            "mem_available_bytes": self.mem_available_bytes,
            "cause": self.cause.value,
            "controller": self.controller,
            "ksmtuned_threshold_bytes": self.ksmtuned_threshold_bytes,
            "ksmtuned_committed_bytes": self.ksmtuned_committed_bytes,
            "ksmtuned_free_bytes": self.ksmtuned_free_bytes,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def watch_message(self) -> str:
        """checkKSM_start_time.sh's line without its time stamp:
        `KSM is running. N MB used. M MB free.`"""
        # The script only knew running / not running; unmerging (run=2) is said as such.
        what = {
            RunState.RUNNING: "running",
            RunState.STOPPED: "not running",
            RunState.UNMERGING: "unmerging",
        }[self.to_state]
        return watch_message(what, self.mem_used_bytes, self.mem_free_bytes)


def _cause(value: object) -> Cause:
    """A history saved before causes were recorded, or by a newer version with a cause
    this one does not know: no telling who made that edge."""
    try:
        return Cause(value)
    except ValueError:
        return Cause.UNKNOWN


def _controller(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.isprintable() or len(value) > 64:
        raise BadEntry("controller: not a short printable name")
    return value


def transition_at(
    timestamp: float,
    before: RunState | None,
    run: int,
    memory: MemInfo | None,
    context: EdgeContext | None = None,
) -> Transition:
    if context is None:
        context = EdgeContext(cause=Cause.UNKNOWN)
    return Transition(
        timestamp=timestamp,
        from_state=before,
        to_state=run_state(run),
        run=run,
        mem_total_bytes=memory.total if memory else None,
        mem_used_bytes=memory.used if memory else None,
        mem_free_bytes=memory.free if memory else None,
        mem_available_bytes=memory.available if memory else None,
        ksmtuned_threshold_bytes=context.ksmtuned_threshold_bytes,
        ksmtuned_committed_bytes=context.ksmtuned_committed_bytes,
        ksmtuned_free_bytes=context.ksmtuned_free_bytes,
        cause=context.cause,
        controller=context.controller,
    )


@dataclass(frozen=True)
class TrackerState:
    """A consistent copy of the tracker for one scrape."""

    current: RunState | None
    counts: dict[tuple[RunState, Cause], int]  # edges into each state, by cause
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
        self._counts = {(s, c): 0 for s in RunState for c in Cause}
        self._history: deque[Transition] = deque(restored, maxlen=max_history)
        # Restored history gives the latest edge into each state across restarts; the
        # counters start at zero, as a Prometheus counter may after a restart.
        self._last: dict[RunState, Transition] = {t.to_state: t for t in self._history}

    def is_edge(self, run: int) -> bool:
        """Whether observing `run` now records an edge: ask before reading the edge's
        context (edge_inputs.py), which is read only then."""
        with self._lock:
            return self._current is not None and self._current != run_state(run)

    def observe(
        self,
        run: int,
        memory: MemInfo | None,
        timestamp: float | None = None,
        context: EdgeContext | None = None,
    ) -> Transition | None:
        """`context`: ksmtuned's inputs and the cause at this edge (None: cause unknown)."""
        state = run_state(run)
        with self._lock:
            before = self._current
            self._current = state
            if before is None or before == state:
                return None
            at = time.time() if timestamp is None else timestamp
            t = transition_at(at, before, run, memory, context)
            self._counts[state, t.cause] += 1
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
