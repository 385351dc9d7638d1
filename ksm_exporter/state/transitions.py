"""Run-state transitions: what checkKSM_start_time.sh logged by hand, and who made each."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

from ksm_exporter.model.derived import KIB, RunState, run_state
from ksm_exporter.model.edge_cause import Cause, EdgeContext
from ksm_exporter.model.numbers import (
    S64_MAX,
    S64_MIN,
    U64_MAX,
    OutOfRange,
    bounded_float,
    bounded_int,
)
from ksm_exporter.model.watch_format import watch_message
from ksm_exporter.readers.meminfo import MemInfo

# The range of each figure of a --state.file entry: what the watcher can write from what
# the readers accept (model/numbers.py applies them), so every edge saved loads again.
# - meminfo's fields are u64 in bytes, MemFree at most MemTotal (readers/meminfo.py):
MEMORY_BYTES = (0, U64_MAX)
# - ksmtuned's free is MemFree + Buffers + Cached, three of them:
KSMTUNED_FREE_BYTES = (0, 3 * U64_MAX)
# - its threshold is bash's signed 64-bit arithmetic in kB (readers/ksmtuned.py), so a
#   negative KSM_THRES_COEF or CONST gives a negative one, as ksmtuned computes it:
KSMTUNED_THRESHOLD_BYTES = (S64_MIN * KIB, S64_MAX * KIB)
# - its committed memory is refused past 2^64 bytes by the reader:
KSMTUNED_COMMITTED_BYTES = (0, U64_MAX)
BYTE_FIGURES = {
    "mem_total_bytes": MEMORY_BYTES,
    "mem_used_bytes": MEMORY_BYTES,
    "mem_free_bytes": MEMORY_BYTES,
    "mem_available_bytes": MEMORY_BYTES,
    "ksmtuned_threshold_bytes": KSMTUNED_THRESHOLD_BYTES,
    "ksmtuned_committed_bytes": KSMTUNED_COMMITTED_BYTES,
    "ksmtuned_free_bytes": KSMTUNED_FREE_BYTES,
}
# `run` as the kernel prints it (%lu). A time more than a day ahead of the clock was not
# written by this clock (a day leaves room for a clock stepped back by NTP or a time zone
# mistake).
RUN_MAX = U64_MAX
FUTURE_MARGIN_SECONDS = 86400.0
# The longest controller name an entry may hold (model/edge_cause.py's are short words).
CONTROLLER_MAX_CHARS = 64


class BadEntry(ValueError):
    """A --state.file entry that is not well-formed; the message says which field."""


def _figure(d: dict[str, object], key: str) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    low, high = BYTE_FIGURES[key]
    try:
        return bounded_int(value, key, low, high)
    except OutOfRange as e:
        raise BadEntry(str(e)) from None


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
        latest = (time.time() if now is None else now) + FUTURE_MARGIN_SECONDS
        try:
            timestamp = bounded_float(d.get("timestamp"), "timestamp", 0, latest)
        except OutOfRange:  # said without `latest`, which changes from entry to entry
            raise BadEntry("timestamp: not a finite time between 1970 and now") from None
        try:
            run = bounded_int(d.get("run"), "run", 0, RUN_MAX)
        except OutOfRange as e:
            raise BadEntry(str(e)) from None
        to_state = _state(d.get("to"), "to")
        if to_state is None or to_state is not run_state(run):
            raise BadEntry("to: not the state of run")
        return cls(
            timestamp=timestamp,
            from_state=_state(d.get("from"), "from"),
            to_state=to_state,
            run=run,
            mem_total_bytes=_figure(d, "mem_total_bytes"),
            mem_used_bytes=_figure(d, "mem_used_bytes"),
            mem_free_bytes=_figure(d, "mem_free_bytes"),
            mem_available_bytes=_figure(d, "mem_available_bytes"),
            ksmtuned_threshold_bytes=_figure(d, "ksmtuned_threshold_bytes"),
            ksmtuned_committed_bytes=_figure(d, "ksmtuned_committed_bytes"),
            ksmtuned_free_bytes=_figure(d, "ksmtuned_free_bytes"),
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
    if not isinstance(value, str) or not value.isprintable() or len(value) > CONTROLLER_MAX_CHARS:
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
