"""The process collector: KSM per VM, read from /proc/PID/ksm_stat of the processes whose
name matches --collector.process.pattern (rendered by per_vm)."""

from __future__ import annotations

import re

from ksm_exporter.collectors.per_vm import vm_metrics
from ksm_exporter.collectors.source import Collected, ScrapeContext, process_table_missing
from ksm_exporter.model.defaults import VM_PATTERN
from ksm_exporter.model.flag_types import Option, positive_int, regex
from ksm_exporter.readers.vm_processes import read_vm_processes
from ksm_exporter.state.read_errors import ProcessReadErrors

OPTIONS = (
    Option(
        "--collector.process.pattern",
        dest="process_pattern",
        type=regex,
        default=VM_PATTERN,
        metavar="REGEX",
        help="processes whose name (comm) this matches, as pgrep does; kernel threads never "
        f"count (default: ksmtuned's qemu names and Proxmox VE's kvm, {VM_PATTERN})",
    ),
    Option(
        "--collector.process.max",
        dest="process_max",
        type=positive_int,
        # 6 series a VM: 100 VMs are 600 series, about 7 times the node's own 89 (the
        # cardinality in docs/CONTRACT.md and docs/performance.md). Denser nodes show their
        # count in ksm_process_series_dropped; the VMs left out merge least.
        default=100,
        metavar="N",
        help="at most this many processes exported, those with most merging pages (default 100)",
    ),
)


class VmProcessCollector:
    def __init__(self, pattern: re.Pattern[str], limit: int, errors: ProcessReadErrors) -> None:
        self.pattern = pattern
        self.limit = limit
        self.errors = errors

    def collect(self, ctx: ScrapeContext) -> Collected:
        names = ctx.process_names()
        missing = process_table_missing(names)
        if missing is not None:  # other users' VMs are hidden: no count would be true
            return Collected((), missing=missing)
        report = read_vm_processes(ctx.procfs, names, self.pattern, self.limit)
        self.errors.record(report)
        return Collected(tuple(vm_metrics(report, self.errors.counts())), vms=report.processes)
