"""ksm_process_*{vm,pid}: KSM per qemu process. HELP texts follow the kernel's
Documentation/filesystems/proc.rst (/proc/<pid>/ksm_stat)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..per_vm import ProcessReport

LABELS = ["vm", "pid"]

# ksm_stat line -> metric name, HELP.
COUNT_METRICS = (
    (
        "ksm_merging_pages",
        "ksm_process_merging_pages",
        "How many pages of this process are involved in KSM merging (not including "
        "ksm_zero_pages).",
    ),
    (
        "ksm_rmap_items",
        "ksm_process_rmap_items",
        "The number of ksm_rmap_item structures in use: KSM generates one for each "
        "ksm-scanned page of the process.",
    ),
    (
        "ksm_zero_pages",
        "ksm_process_zero_pages",
        "When use_zero_pages is enabled, how many empty pages of this process are merged "
        "with kernel zero pages by KSM.",
    ),
    (
        "ksm_process_profit",
        "ksm_process_profit_bytes",
        "The profit that KSM brings this process (saved bytes), less the memory of its "
        "rmap_items; negative when KSM costs more than it saves.",
    ),
)
FLAG_METRICS = (
    (
        "ksm_mergeable",
        "ksm_process_mergeable",
        "1 when any VMA of the process is currently applicable to KSM.",
    ),
    (
        "ksm_merge_any",
        "ksm_process_merge_any",
        "1 when the process was added by prctl(PR_SET_MEMORY_MERGE) to KSM's candidates, "
        "KSM scanning being fully enabled at process level.",
    ),
)


def vm_metrics(report: ProcessReport, errors: dict[str, int]) -> Iterator[Metric]:
    for field, name, help_text in COUNT_METRICS:
        g = GaugeMetricFamily(name, help_text, labels=LABELS)
        for p in report.processes:
            if field in p.ksm.values:
                g.add_metric([p.vm, str(p.pid)], p.ksm.values[field])
        if g.samples:
            yield g
    for field, name, help_text in FLAG_METRICS:
        g = GaugeMetricFamily(name, help_text, labels=LABELS)
        for p in report.processes:
            if field in p.ksm.flags:
                g.add_metric([p.vm, str(p.pid)], 1.0 if p.ksm.flags[field] else 0.0)
        if g.samples:
            yield g
    yield GaugeMetricFamily(
        "ksm_process_series_dropped",
        "Matching processes left out of this scrape by --collector.process.max (those with "
        "the fewest merging pages).",
        value=report.dropped,
    )
    c = CounterMetricFamily(
        "ksm_process_read_errors",
        "Matching processes left out of a scrape, counted at each scrape that left one out. "
        "vanished: it had exited when its files were read, gone or a zombie not yet reaped "
        "(a zombie counts at every scrape until its parent reaps it). unreadable: its KSM "
        "file could not be read or parsed (usually: the exporter needs root or "
        "CAP_DAC_READ_SEARCH).",
        labels=["reason"],
    )
    for reason, n in sorted(errors.items()):
        c.add_metric([reason], n)
    yield c
