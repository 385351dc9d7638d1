"""The vmstat collector: what KSM costs in copy-on-write breaks of merged pages. HELP texts
follow the kernel's Documentation/admin-guide/mm/ksm.rst."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from ksm_exporter.collectors.source import Collected, ScrapeContext
from ksm_exporter.readers import describe_error
from ksm_exporter.readers.vmstat import read_vmstat
from ksm_exporter.state.read_errors import ReadErrors

VMSTAT = "vmstat"  # the label of ksm_exporter_read_errors_total{file}

# /proc/vmstat line -> metric name (without _total), HELP.
VMSTAT_METRICS = (
    (
        "cow_ksm",
        "ksm_cow_breaks",
        "Incremented every time a KSM page triggers copy on write (COW): when users try to "
        "write to a KSM page, a copy has to be made (cow_ksm in /proc/vmstat).",
    ),
    (
        "ksm_swpin_copy",
        "ksm_swapin_copies",
        "Incremented every time a KSM page is copied when swapping in (ksm_swpin_copy in "
        "/proc/vmstat).",
    ),
)


class VmstatCollector:
    def __init__(self, read_errors: ReadErrors) -> None:
        self.read_errors = read_errors

    def collect(self, ctx: ScrapeContext) -> Collected:
        try:
            values = read_vmstat(ctx.procfs)
        except FileNotFoundError:
            return Collected(())  # a procfs without vmstat (a fixture tree): nothing to say
        except (OSError, ValueError) as e:
            self.read_errors.scrape_read({VMSTAT}, {VMSTAT: describe_error(e)})
            return Collected((), missing=f"{VMSTAT}: {describe_error(e)}")
        self.read_errors.scrape_read({VMSTAT}, {})
        return Collected(tuple(vmstat_metrics(values)))


def vmstat_metrics(values: dict[str, int]) -> Iterator[Metric]:
    for field, name, help_text in VMSTAT_METRICS:
        if field in values:
            yield CounterMetricFamily(name, help_text, value=values[field])
