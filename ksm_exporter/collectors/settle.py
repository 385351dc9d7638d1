"""The settle collector: ksm_settled and ksm_settle_duration_seconds, from the settle
tracker the watcher feeds."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from ksm_exporter.collectors.source import Collected, ScrapeContext
from ksm_exporter.model.defaults import SETTLE_FULL_SCANS
from ksm_exporter.model.flag_types import Option, positive_int
from ksm_exporter.state.settle import TOLERANCE, SettleState, SettleTracker

OPTIONS = (
    Option(
        "--collector.settle.full-scans",
        dest="settle_full_scans",
        type=positive_int,
        default=SETTLE_FULL_SCANS,
        metavar="K",
        help="ksm_settled: pages_sharing moved by less than 1%% over the last K full scans "
        f"(default {SETTLE_FULL_SCANS})",
        aliases=("--settle.full-scans",),
    ),
)


class SettleCollector:
    def __init__(self, tracker: SettleTracker) -> None:
        self.tracker = tracker

    def collect(self, ctx: ScrapeContext) -> Collected:
        return Collected(tuple(settle_metrics(self.tracker.state())))


def settle_metrics(state: SettleState) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "ksm_settled",
        f"1 while KSM runs and pages_sharing, sampled as each full scan completes, moved "
        f"by less than {TOLERANCE:.0%} over the last {state.full_scans} completed full "
        f"scans (--settle.full-scans); else 0.",
        value=1.0 if state.settled else 0.0,
    )
    if state.duration_seconds is not None:
        yield GaugeMetricFamily(
            "ksm_settle_duration_seconds",
            "Time from the latest change of KSM into running until it first counted as "
            "settled (ksm_settled).",
            value=state.duration_seconds,
        )
