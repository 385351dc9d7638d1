"""What KSM costs: ksmd's CPU time, and the copy-on-write breaks of merged pages. HELP texts
of the vmstat counters follow the kernel's Documentation/admin-guide/mm/ksm.rst."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

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


def ksmd_metrics(cpu_seconds: float) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "ksm_ksmd_cpu_seconds",
        "CPU time spent by the ksmd kernel thread (user + system, from its /proc stat).",
        value=cpu_seconds,
    )


def vmstat_metrics(values: dict[str, int]) -> Iterator[Metric]:
    for field, name, help_text in VMSTAT_METRICS:
        if field in values:
            yield CounterMetricFamily(name, help_text, value=values[field])
