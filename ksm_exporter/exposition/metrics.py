"""The /metrics collector: a fresh read of every KSM file plus the tracker's state.

Families are plain `Family` tuples (see text.py): FastRegistry writes them out directly,
and collect() turns them into prometheus-client objects for any other registry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .. import __version__
from ..derived import RunState, run_state, saved_bytes, sharing_ratio
from ..monitor import KsmMonitor
from ..snapshot import Snapshot
from ..transitions import TrackerState
from .ksm_files import ADVISOR_MODE_HELP, FILE_METRICS, FileMetric, unknown_file_metric
from .text import Family, counter, gauge, to_metric

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

DERIVED_NAMES = frozenset(
    {"ksm_page_size_bytes", "ksm_saved_bytes", "ksm_sharing_ratio", "ksm_run_state", "ksm_up"}
)


_KNOWN_FILES = frozenset(m.file for m in FILE_METRICS)
_TAKEN_NAMES = frozenset(m.name for m in FILE_METRICS) | DERIVED_NAMES


def _family(m: FileMetric, value: int) -> Family:
    v = value * m.scale if m.scale != 1.0 else value
    return counter(m.name, m.help, v) if m.kind == "counter" else gauge(m.name, m.help, v)


class KsmCollector:
    def __init__(self, monitor: KsmMonitor) -> None:
        self.monitor = monitor

    def families(self) -> Iterator[Family]:
        snap = self.monitor.scrape()
        state = self.monitor.tracker_state()
        yield from ksm_file_metrics(snap)
        yield from derived_metrics(snap)
        yield from run_state_metrics(state)
        yield from health_metrics(snap, self.monitor)

    def collect(self) -> Iterator[Metric]:
        """For a prometheus-client CollectorRegistry."""
        return map(to_metric, self.families())


def ksm_file_metrics(snap: Snapshot) -> Iterator[Family]:
    ksm = snap.ksm
    for m in FILE_METRICS:
        if m.file in ksm.values:
            yield _family(m, ksm.values[m.file])
    known, taken = _KNOWN_FILES, _TAKEN_NAMES
    for file in sorted(ksm.values.keys() - known):
        m = unknown_file_metric(file)
        if m.name in taken:
            log.debug("unknown KSM file %s would collide with %s; not exported", file, m.name)
            continue
        yield _family(m, ksm.values[file])
    if ksm.advisor_mode is not None:
        active = ksm.advisor_mode.active
        samples = tuple(
            ((mode,), 1.0 if mode == active else 0.0) for mode in ksm.advisor_mode.modes
        )
        yield Family("ksm_advisor_mode", ADVISOR_MODE_HELP, "gauge", ("mode",), samples)


def derived_metrics(snap: Snapshot) -> Iterator[Family]:
    values = snap.ksm.values
    yield gauge(
        "ksm_page_size_bytes",
        "Size of a memory page, used to turn pages into bytes.",
        snap.page_size,
    )
    if "pages_sharing" in values:
        yield gauge(
            "ksm_saved_bytes",
            "Memory saved by KSM: pages_sharing (how many more sites are sharing the shared "
            "pages) times the page size.",
            saved_bytes(values["pages_sharing"], snap.page_size),
        )
        if "pages_shared" in values:
            yield gauge(
                "ksm_sharing_ratio",
                "pages_sharing / pages_shared: a high ratio indicates good sharing; 0 when "
                "nothing is shared.",
                sharing_ratio(values["pages_sharing"], values["pages_shared"]),
            )
    run = values.get("run")
    if run is not None:
        current = run_state(run)
        yield Family(
            "ksm_run_state",
            "KSM run state from the run file: stopped (0, merged pages kept), running (1), "
            "unmerging (2, stopping and unmerging all pages). One state is 1.",
            "gauge",
            ("state",),
            tuple(((s.value,), 1.0 if s is current else 0.0) for s in RunState),
        )


_LAST_TRANSITION = (
    (
        "ksm_last_transition_memory_used_bytes",
        "Used memory (MemTotal - MemFree, as free(1) of procps 3.2 and the seed's log "
        "print it) at the latest change into this state.",
        "mem_used_bytes",
    ),
    (
        "ksm_last_transition_memory_free_bytes",
        "Free memory (MemFree) at the latest change into this state.",
        "mem_free_bytes",
    ),
    (
        "ksm_last_transition_memory_available_bytes",
        "Available memory (MemAvailable) at the latest change into this state.",
        "mem_available_bytes",
    ),
)


def run_state_metrics(state: TrackerState) -> Iterator[Family]:
    yield Family(
        "ksm_run_transitions",
        "Changes of the KSM run state into each state seen by the exporter (its first look "
        "at start-up is not a change).",
        "counter",
        ("state",),
        tuple(((s.value,), state.counts.get(s, 0)) for s in RunState),
    )
    last = [(s.value, state.last[s]) for s in RunState if state.last.get(s) is not None]
    yield Family(
        "ksm_last_transition_timestamp_seconds",
        "Unix time of the latest change of the KSM run state into this state.",
        "gauge",
        ("state",),
        tuple(((name,), t.timestamp) for name, t in last),
    )
    for metric, help, attr in _LAST_TRANSITION:
        samples = (((name,), getattr(t, attr)) for name, t in last)
        yield Family(
            metric,
            help,
            "gauge",
            ("state",),
            tuple((labels, v) for labels, v in samples if v is not None),
        )


def health_metrics(snap: Snapshot, monitor: KsmMonitor) -> Iterator[Family]:
    yield gauge(
        "ksm_up",
        "1 when the KSM sysfs directory exists and was read, else 0.",
        1.0 if snap.ksm.present else 0.0,
    )
    yield Family(
        "ksm_exporter_build_info",
        "The version of ksm-exporter.",
        "gauge",
        ("version",),
        (((__version__,), 1.0),),
    )
    yield Family(
        "ksm_exporter_read_errors",
        "Reads of a KSM or procfs file that failed or did not parse; the file was skipped.",
        "counter",
        ("file",),
        tuple(((file,), n) for file, n in sorted(monitor.read_errors.counts().items())),
    )
    if monitor.state_file is not None:
        yield counter(
            "ksm_exporter_state_file_errors",
            "Loads and saves of --state.file that failed; the history is kept in memory.",
            monitor.state_file.errors,
        )
