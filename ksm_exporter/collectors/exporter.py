"""The exporter collector: the exporter itself (version, read errors, state file errors),
and the exporter's own process and HTTP metrics the daemon assembles
(daemon/own_metrics.py; none with --web.disable-exporter-metrics)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ksm_exporter import __version__
from ksm_exporter.collectors.source import Collected, ScrapeContext
from ksm_exporter.state.read_errors import ReadErrors
from ksm_exporter.state.state_file import StateFile


class ExporterCollector:
    def __init__(
        self,
        read_errors: ReadErrors,
        state_file: StateFile | None,
        own_metrics: Sequence[Collector] = (),
    ) -> None:
        self.read_errors = read_errors
        self.state_file = state_file
        self.own_metrics = tuple(own_metrics)

    def collect(self, ctx: ScrapeContext) -> Collected:
        state_file_errors = None if self.state_file is None else self.state_file.errors
        families = list(exporter_metrics(self.read_errors.counts(), state_file_errors))
        for collector in self.own_metrics:
            families.extend(collector.collect())
        return Collected(tuple(families))


def exporter_metrics(
    read_errors: dict[str, int], state_file_errors: int | None
) -> Iterator[Metric]:
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
    for file, n in sorted(read_errors.items()):
        errors.add_metric([file], n)
    yield errors
    if state_file_errors is not None:
        yield CounterMetricFamily(
            "ksm_exporter_state_file_errors",
            "Lines of --state.file dropped at start (not a well-formed entry), and loads and "
            "saves that failed; the history is kept in memory.",
            value=state_file_errors,
        )
