"""Who changed `run`: ksmtuned by its own rule, another controller, or no telling.

ksmtuned looks every KSM_MONITOR_INTERVAL seconds and, from its inputs at that moment,
writes 1 (start) or 0 (stop) to `run`; it never writes 2. An edge is ksmtuned's when it
runs and its rule, applied to its inputs at the edge, gives the state KSM went to: it
wrote `run` just after reading them, and the watcher sees the write within one poll.
Otherwise someone else flipped `run` (a person, `ksm-exporter experiment`, the ksm
service, oVirt's MOM, KubeVirt's virt-handler ...). When ksmtuned's inputs or the process
table could not be seen, there is no telling.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from ksm_exporter.model.derived import KIB, RunState, mebibytes, run_state


class Cause(str, Enum):
    KSMTUNED = "ksmtuned"  # ksmtuned runs and its rule gives the new state
    OTHER = "other"  # ksmtuned does not run, or its rule says the opposite
    UNKNOWN = "unknown"  # the process table or ksmtuned's inputs could not be seen


# Process name (comm) -> the controller it is. MOM runs as /usr/sbin/momd (oVirt's
# mom-vdsm.service; vdsm's supervdsmd does the write for it); KubeVirt's node agent,
# virt-handler, starts and stops KSM under memory pressure.
CONTROLLER_PROCESSES = {"momd": "mom", "virt-handler": "virt-handler"}


def ksmtuned_would_run(total_kb: int, threshold_kb: int, committed_kb: int, free_kb: int) -> bool:
    """ksmtuned's adjust(): it stops KSM exactly when committed + thres < total and
    free > thres; otherwise it (re)starts it."""
    stop = committed_kb + threshold_kb < total_kb and free_kb > threshold_kb
    return not stop


@dataclass(frozen=True)
class KsmtunedFigures:
    """ksmtuned's inputs at the edge, in kB as it computes them; None: not observed."""

    total_kb: int | None = None
    threshold_kb: int | None = None
    committed_kb: int | None = None
    free_kb: int | None = None

    def would_run(self) -> bool | None:
        """ksmtuned's decision on these inputs; None when one of them is unknown."""
        if (
            self.total_kb is None
            or self.threshold_kb is None
            or self.committed_kb is None
            or self.free_kb is None
        ):
            return None
        return ksmtuned_would_run(self.total_kb, self.threshold_kb, self.committed_kb, self.free_kb)


@dataclass(frozen=True)
class ProcessesSeen:
    """What the process table showed at the edge. `visible` is False when processes of
    other users are hidden from us (hidepid) or /proc could not be listed: then whether
    ksmtuned or a controller runs is not known."""

    visible: bool
    ksmtuned_running: bool = False
    controllers: tuple[str, ...] = ()  # CONTROLLER_PROCESSES values seen, in that order


@dataclass(frozen=True)
class EdgeContext:
    """Stored with a transition: ksmtuned's inputs (bytes; None = not observed), the
    cause, and the controller whose process was there when the cause is `other`."""

    cause: Cause
    controller: str | None = None
    ksmtuned_threshold_bytes: int | None = None
    ksmtuned_committed_bytes: int | None = None
    ksmtuned_free_bytes: int | None = None


def _bytes(kb: int | None) -> int | None:
    return None if kb is None else kb * KIB


def edge_cause(run: int, figures: KsmtunedFigures, seen: ProcessesSeen) -> Cause:
    state = run_state(run)
    if state is RunState.UNMERGING:
        return Cause.OTHER  # ksmtuned only ever writes 0 or 1
    if not seen.visible:
        return Cause.UNKNOWN
    if not seen.ksmtuned_running:
        return Cause.OTHER
    would_run = figures.would_run()
    if would_run is None:
        return Cause.UNKNOWN
    return Cause.KSMTUNED if would_run == (state is RunState.RUNNING) else Cause.OTHER


def explain_edge(run: int, figures: KsmtunedFigures, seen: ProcessesSeen) -> EdgeContext:
    """The context of an edge into `run`, from what was observed at that moment."""
    cause = edge_cause(run, figures, seen)
    controller = seen.controllers[0] if cause is Cause.OTHER and seen.controllers else None
    return EdgeContext(
        cause=cause,
        controller=controller,
        ksmtuned_threshold_bytes=_bytes(figures.threshold_kb),
        ksmtuned_committed_bytes=_bytes(figures.committed_kb),
        ksmtuned_free_bytes=_bytes(figures.free_kb),
    )


def _mb(n: int | None) -> str:
    return "?" if n is None else str(mebibytes(n))


def _compare(free_bytes: int | None, threshold_bytes: int | None) -> str:
    if free_bytes is None or threshold_bytes is None:
        return "vs"
    return "<" if free_bytes < threshold_bytes else ">" if free_bytes > threshold_bytes else "="


def known_sum(a: int | None, b: int | None) -> int | None:
    """a + b, or None when either is unknown (MemTotal is the log's used + free)."""
    return None if a is None or b is None else a + b


def rule_text(
    committed_bytes: int | None,
    threshold_bytes: int | None,
    total_bytes: int | None,
    free_bytes: int | None,
) -> str:
    """ksmtuned's rule on its inputs, in its words and MB (`?`: not observed): `committed
    30 + threshold 1600 < total 7990, free 4011 > threshold 1600` (it stops KSM exactly
    when both hold). The comparisons are of the bytes, not of the rounded MB."""
    used = known_sum(committed_bytes, threshold_bytes)
    return (
        f"committed {_mb(committed_bytes)} + threshold {_mb(threshold_bytes)} "
        f"{_compare(used, total_bytes)} total {_mb(total_bytes)}, "
        f"free {_mb(free_bytes)} {_compare(free_bytes, threshold_bytes)} "
        f"threshold {_mb(threshold_bytes)}"
    )


class RecordedEdge(Protocol):
    """What a recorded transition holds of ksmtuned's inputs and the memory (bytes); read
    only (properties), as a frozen dataclass's fields are."""

    @property
    def ksmtuned_committed_bytes(self) -> int | None: ...
    @property
    def ksmtuned_threshold_bytes(self) -> int | None: ...
    @property
    def ksmtuned_free_bytes(self) -> int | None: ...
    @property
    def mem_used_bytes(self) -> int | None: ...
    @property
    def mem_free_bytes(self) -> int | None: ...


def edge_rule_text(edge: RecordedEdge) -> str:
    """rule_text of a recorded edge: MemTotal is the log's used + free (MemFree)."""
    return rule_text(
        edge.ksmtuned_committed_bytes,
        edge.ksmtuned_threshold_bytes,
        known_sum(edge.mem_used_bytes, edge.mem_free_bytes),
        edge.ksmtuned_free_bytes,
    )


def cause_text(cause: Cause, controller: str | None) -> str:
    """`other (mom)`, `ksmtuned`."""
    return f"{cause.value} ({controller})" if controller else cause.value


def explanation(context: EdgeContext, total_bytes: int | None = None) -> str:
    """What `watch --explain` appends to checkKSM_start_time.sh's line: `cause: ksmtuned;
    ksmtuned (MB) committed 25742 + threshold 6411 > total 32061, free 6315 < threshold
    6411.` (`total_bytes`: MemTotal at the edge)."""
    words = rule_text(
        context.ksmtuned_committed_bytes,
        context.ksmtuned_threshold_bytes,
        total_bytes,
        context.ksmtuned_free_bytes,
    )
    return f"cause: {cause_text(context.cause, context.controller)}; ksmtuned (MB) {words}."
