"""The ksm collector: every file of /sys/kernel/mm/ksm, read once per scrape, and what is
derived from them (bytes saved, sharing ratio, run state)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from ksm_exporter.collectors.source import Collected, ScrapeContext
from ksm_exporter.model.derived import RunState, run_state, saved_bytes, sharing_ratio
from ksm_exporter.model.ksm_files import (
    ADVISOR_MODE_HELP,
    BY_FILE,
    FILE_METRICS,
    UNKNOWN_FILE_HELP,
    UNKNOWN_FILE_METRIC,
    FileMetric,
    Kind,
)
from ksm_exporter.readers.sysfs_ksm import KsmReading, read_ksm
from ksm_exporter.state.read_errors import ReadErrors


def _family(m: FileMetric, value: int) -> Metric:
    v = value / m.divisor if m.divisor != 1 else value
    if m.kind is Kind.COUNTER:
        return CounterMetricFamily(m.name, m.help, value=v)
    return GaugeMetricFamily(m.name, m.help, value=v)


class KsmCollector:
    def __init__(self, ksm_dir: Path, page_size: int, read_errors: ReadErrors) -> None:
        self.ksm_dir = ksm_dir
        self.page_size = page_size
        self.read_errors = read_errors

    def collect(self, ctx: ScrapeContext) -> Collected:
        ksm = read_ksm(self.ksm_dir)
        self.read_errors.scrape_read(set(ksm.raw) | set(ksm.errors), dict(ksm.errors))
        # An absent KSM directory is an observation (ksm_up 0), not a failed collector;
        # a file that failed is skipped and counted in ksm_exporter_read_errors_total.
        return Collected(tuple(render(ksm, self.page_size)))


def render(ksm: KsmReading, page_size: int) -> Iterator[Metric]:
    yield from ksm_file_metrics(ksm)
    yield from derived_metrics(ksm, page_size)
    yield GaugeMetricFamily(
        "ksm_up",
        "1 when the KSM sysfs directory exists and was read, else 0.",
        value=1.0 if ksm.present else 0.0,
    )


def ksm_file_metrics(ksm: KsmReading) -> Iterator[Metric]:
    for m in FILE_METRICS:
        if m.file in ksm.values:
            yield _family(m, ksm.values[m.file])
    unknown = sorted(ksm.values.keys() - BY_FILE.keys())
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


def derived_metrics(ksm: KsmReading, page_size: int) -> Iterator[Metric]:
    values = ksm.values
    yield GaugeMetricFamily(
        "ksm_page_size_bytes",
        "Size of a memory page, used to turn pages into bytes.",
        value=page_size,
    )
    if "pages_sharing" in values:
        yield GaugeMetricFamily(
            "ksm_saved_bytes",
            "Memory saved by KSM: pages_sharing (how many more sites are sharing the shared "
            "pages) times the page size.",
            value=saved_bytes(values["pages_sharing"], page_size),
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
