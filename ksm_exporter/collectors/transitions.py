"""The transitions collector: what the watcher's tracker holds (edges of the run state, and
the memory at each), read once per scrape; it never looks at KSM itself."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ksm_exporter.collectors.source import Collected, ScrapeContext
from ksm_exporter.model.derived import RunState
from ksm_exporter.state.transitions import TrackerState, TransitionTracker


class TransitionsCollector:
    def __init__(self, tracker: TransitionTracker) -> None:
        self.tracker = tracker

    def collect(self, ctx: ScrapeContext) -> Collected:
        return Collected(tuple(run_state_metrics(self.tracker.state())))


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
            "Used memory (MemTotal - MemFree, as free(1) of procps 3.2 prints it in the log "
            "of checkKSM_start_time.sh) at the latest change into this state.",
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
