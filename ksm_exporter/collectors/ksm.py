"""The /metrics collector: a fresh read of every KSM file plus the tracker's state."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ksm_exporter import __version__
from ksm_exporter.collectors.ksm_files import (
    ADVISOR_MODE_HELP,
    FILE_METRICS,
    UNKNOWN_FILE_HELP,
    UNKNOWN_FILE_METRIC,
    FileMetric,
)
from ksm_exporter.model.derived import RunState, run_state, saved_bytes, sharing_ratio
from ksm_exporter.state.monitor import KsmMonitor
from ksm_exporter.state.snapshot import Snapshot
from ksm_exporter.state.transitions import TrackerState

log = logging.getLogger(__name__)


def _family(m: FileMetric, value: int) -> Metric:
    v = value * m.scale if m.scale != 1.0 else value
    if m.kind == "counter":
        return CounterMetricFamily(m.name, m.help, value=v)
    return GaugeMetricFamily(m.name, m.help, value=v)


class KsmCollector(Collector):
    def __init__(self, monitor: KsmMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        snap = self.monitor.scrape()
        state = self.monitor.tracker_state()
        yield from ksm_file_metrics(snap)
        yield from derived_metrics(snap)
        yield from run_state_metrics(state)
        yield from memory_metrics(snap)
        yield from health_metrics(snap, self.monitor)


def ksm_file_metrics(snap: Snapshot) -> Iterator[Metric]:
    ksm = snap.ksm
    known = {m.file for m in FILE_METRICS}
    for m in FILE_METRICS:
        if m.file in ksm.values:
            yield _family(m, ksm.values[m.file])
    unknown = sorted(ksm.values.keys() - known)
    if unknown:
        g = GaugeMetricFamily(UNKNOWN_FILE_METRIC, UNKNOWN_FILE_HELP, labels=["file"])
        for file in unknown:
            g.add_metric([file], ksm.values[file])
        yield g
    if ksm.advisor_mode is not None:
        g = GaugeMetricFamily("ksm_advisor_mode", ADVISOR_MODE_HELP, labels=["mode"])
        for mode in ksm.advisor_mode.modes:
            g.add_metric([mode], 1.0 if mode == ksm.advisor_mode.active else 0.0)
        yield g


def derived_metrics(snap: Snapshot) -> Iterator[Metric]:
    values = snap.ksm.values
    yield GaugeMetricFamily(
        "ksm_page_size_bytes",
        "Size of a memory page, used to turn pages into bytes.",
        value=snap.page_size,
    )
    if "pages_sharing" in values:
        yield GaugeMetricFamily(
            "ksm_saved_bytes",
            "Memory saved by KSM: pages_sharing (how many more sites are sharing the shared "
            "pages) times the page size.",
            value=saved_bytes(values["pages_sharing"], snap.page_size),
        )
        if "pages_shared" in values:
            yield GaugeMetricFamily(
                "ksm_sharing_ratio",
                "pages_sharing / pages_shared: a high ratio indicates good sharing; 0 when "
                "nothing is shared.",
                value=sharing_ratio(values["pages_sharing"], values["pages_shared"]),
            )
    run = values.get("run")
    if run is not None:
        current = run_state(run)
        g = GaugeMetricFamily(
            "ksm_run_state",
            "KSM run state from the run file: stopped (0, merged pages kept), running (1), "
            "unmerging (2, stopping and unmerging all pages). One state is 1.",
            labels=["state"],
        )
        for s in RunState:
            g.add_metric([s.value], 1.0 if s is current else 0.0)
        yield g


def run_state_metrics(state: TrackerState) -> Iterator[Metric]:
    c = CounterMetricFamily(
        "ksm_run_transitions",
        "Changes of the KSM run state into each state seen by the exporter (its first look "
        "at start-up is not a change), by cause: ksmtuned (its rule on its inputs at the "
        "change gives the new state), other (ksmtuned not running or its rule says the "
        "opposite), unknown (its inputs or the process table could not be seen).",
        labels=["state", "cause"],
    )
    for (s, cause), n in state.counts.items():
        c.add_metric([s.value, cause.value], n)
    yield c
    families = {
        "timestamp": GaugeMetricFamily(
            "ksm_last_transition_timestamp_seconds",
            "Unix time of the latest change of the KSM run state into this state.",
            labels=["state"],
        ),
        "used": GaugeMetricFamily(
            "ksm_last_transition_memory_used_bytes",
            "Used memory (MemTotal - MemFree, as free(1) of procps 3.2 and "
            "checkKSM_start_time.sh's log print it) at the latest change into this state.",
            labels=["state"],
        ),
        "free": GaugeMetricFamily(
            "ksm_last_transition_memory_free_bytes",
            "Free memory (MemFree) at the latest change into this state.",
            labels=["state"],
        ),
        "available": GaugeMetricFamily(
            "ksm_last_transition_memory_available_bytes",
            "Available memory (MemAvailable) at the latest change into this state.",
            labels=["state"],
        ),
    }
    for s in RunState:
        t = state.last.get(s)
        if t is None:
            continue
        families["timestamp"].add_metric([s.value], t.timestamp)
        for key, value in (
            ("used", t.mem_used_bytes),
            ("free", t.mem_free_bytes),
            ("available", t.mem_available_bytes),
        ):
            if value is not None:
                families[key].add_metric([s.value], value)
    yield from families.values()


def memory_metrics(snap: Snapshot) -> Iterator[Metric]:
    """Memory now, in the seed's terms, so that alerts on KSM being stopped under memory
    pressure need nothing but this exporter (node_exporter has the same figures under
    other names)."""
    mem = snap.memory
    if mem is None:
        return
    yield GaugeMetricFamily(
        "ksm_memory_total_bytes", "MemTotal from /proc/meminfo.", value=mem.total
    )
    yield GaugeMetricFamily(
        "ksm_memory_used_bytes",
        "Used memory as free(1) of procps 3.2 and the seed's log print it: MemTotal - MemFree.",
        value=mem.used,
    )
    yield GaugeMetricFamily("ksm_memory_free_bytes", "MemFree from /proc/meminfo.", value=mem.free)
    if mem.available is not None:
        yield GaugeMetricFamily(
            "ksm_memory_available_bytes",
            "MemAvailable from /proc/meminfo (kernel 3.14+).",
            value=mem.available,
        )


def health_metrics(snap: Snapshot, monitor: KsmMonitor) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "ksm_up",
        "1 when the KSM sysfs directory exists and was read, else 0.",
        value=1.0 if snap.ksm.present else 0.0,
    )
    info = GaugeMetricFamily(
        "ksm_exporter_build_info", "The version of ksm-exporter.", labels=["version"]
    )
    info.add_metric([__version__], 1.0)
    yield info
    errors = CounterMetricFamily(
        "ksm_exporter_read_errors",
        "Scrapes whose read of this KSM or procfs file failed or did not parse; the file "
        "was skipped.",
        labels=["file"],
    )
    for file, n in sorted(monitor.read_errors.counts().items()):
        errors.add_metric([file], n)
    yield errors
    if monitor.state_file is not None:
        yield CounterMetricFamily(
            "ksm_exporter_state_file_errors",
            "Lines of --state.file dropped at start (not a well-formed entry), and loads and "
            "saves that failed; the history is kept in memory.",
            value=monitor.state_file.errors,
        )
