"""The memory collector: /proc/meminfo, read once per scrape (shared with ksmtuned)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from ksm_exporter.collectors.source import Collected, ScrapeContext
from ksm_exporter.readers.meminfo import MemInfo


class MemoryCollector:
    def collect(self, ctx: ScrapeContext) -> Collected:
        memory = ctx.meminfo()
        if isinstance(memory, str):
            return Collected((), missing=f"meminfo: {memory}")
        return Collected(tuple(memory_metrics(memory)))


def memory_metrics(mem: MemInfo) -> Iterator[Metric]:
    """Memory now, in the terms of the KSM test report's log (procps `free`), so that
    alerts on KSM being stopped under memory pressure need nothing but this exporter
    (node_exporter has the same figures under other names)."""
    yield GaugeMetricFamily(
        "ksm_memory_total_bytes", "MemTotal from /proc/meminfo.", value=mem.total
    )
    yield GaugeMetricFamily(
        "ksm_memory_used_bytes",
        "Used memory as free(1) of procps 3.2 prints it in the log of checkKSM_start_time.sh: "
        "MemTotal - MemFree.",
        value=mem.used,
    )
    yield GaugeMetricFamily("ksm_memory_free_bytes", "MemFree from /proc/meminfo.", value=mem.free)
    if mem.available is not None:
        yield GaugeMetricFamily(
            "ksm_memory_available_bytes",
            "MemAvailable from /proc/meminfo (kernel 3.14+).",
            value=mem.available,
        )
