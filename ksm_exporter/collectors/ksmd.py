"""The ksmd collector: the CPU time of the ksmd kernel thread, what KSM's work costs."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from ksm_exporter.collectors.source import Collected, ScrapeContext, process_table_missing
from ksm_exporter.readers import describe_error
from ksm_exporter.readers.ksmd import clock_ticks, cpu_seconds, read_ksmd_stat
from ksm_exporter.state.read_errors import ReadErrors

KSMD_STAT = "ksmd/stat"  # the label of ksm_exporter_read_errors_total{file}


class KsmdCollector:
    def __init__(self, read_errors: ReadErrors) -> None:
        self.read_errors = read_errors
        self.clock_ticks = clock_ticks()

    def collect(self, ctx: ScrapeContext) -> Collected:
        names = ctx.process_names()
        missing = process_table_missing(names)
        if missing is not None:  # ksmd, a kernel thread, is among the hidden
            return Collected((), missing=missing)
        try:
            stat = read_ksmd_stat(ctx.procfs, names)
        except (OSError, ValueError) as e:
            self.read_errors.scrape_read({KSMD_STAT}, {KSMD_STAT: describe_error(e)})
            return Collected((), missing=f"{KSMD_STAT}: {describe_error(e)}")
        self.read_errors.scrape_read({KSMD_STAT}, {})
        if stat is None:  # no ksmd: a kernel without KSM
            return Collected(())
        return Collected(tuple(ksmd_metrics(cpu_seconds(stat, self.clock_ticks))))


def ksmd_metrics(cpu_seconds: float) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "ksm_ksmd_cpu_seconds",
        "CPU time spent by the ksmd kernel thread (user + system, from its /proc stat).",
        value=cpu_seconds,
    )
