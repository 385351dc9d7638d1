"""ksm_process_*{vm,vmid,uuid,namespace,pid}: KSM per VM process. HELP texts follow the kernel's
Documentation/filesystems/proc.rst (/proc/<pid>/ksm_stat)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ksm_exporter.model.qemu import label_values
from ksm_exporter.readers.process_ksm import ProcessKsm
from ksm_exporter.readers.vm_processes import ProcessReport

# Every series carries every label, "" where the command line does not give it: a family
# keeps one label set within a scrape, and Prometheus treats an empty label as absent.
LABELS = ["vm", "vmid", "uuid", "namespace", "pid"]

# ksm_stat line -> metric name, HELP: the counts, then the yes/no flags.
METRICS = (
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


def line_value(ksm: ProcessKsm, line: str) -> float | None:
    """A ksm_stat line's number, 1 or 0 for yes or no; None when the kernel did not print it."""
    if line in ksm.values:
        return ksm.values[line]
    if line in ksm.flags:
        return 1.0 if ksm.flags[line] else 0.0
    return None


def vm_metrics(report: ProcessReport, errors: dict[str, int]) -> Iterator[Metric]:
    # Each process's labels once (bounded in length: model/qemu.py), not once per metric.
    labelled = [(p.ksm, [*label_values(p.identity), str(p.pid)]) for p in report.processes]
    for line, name, help_text in METRICS:
        g = GaugeMetricFamily(name, help_text, labels=LABELS)
        for ksm, labels in labelled:
            value = line_value(ksm, line)
            if value is not None:
                g.add_metric(labels, value)
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
