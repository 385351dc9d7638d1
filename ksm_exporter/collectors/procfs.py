"""The collector of everything read from the process table: per-VM KSM, ksmtuned's inputs,
ksmd's CPU time, and KSM's vmstat counters.

One collector rather than one per concern because all of them need the name of every
process, and naming 10,000 processes is most of a scrape's time: it is done once here, and
each concern's metrics come from its own module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ksm_exporter.collectors.cost import ksmd_metrics, vmstat_metrics
from ksm_exporter.collectors.ksmtuned import ksmtuned_metrics
from ksm_exporter.collectors.per_vm import vm_metrics
from ksm_exporter.collectors.process_names import ProcessNameCache
from ksm_exporter.model.derived import page_size
from ksm_exporter.readers import describe_error
from ksm_exporter.readers.ksmd import KSMD, clock_ticks, cpu_seconds, read_ksmd_stat
from ksm_exporter.readers.ksmtuned import (
    KSMTUNED_NAME,
    KSMTUNED_QEMU,
    PROXMOX_QEMU_NAME,
    committed_kb,
    ksmtuned_alive,
    ksmtuned_inputs,
)
from ksm_exporter.readers.ksmtuned_conf import KsmtunedConfig, read_ksmtuned_conf
from ksm_exporter.readers.meminfo import read_meminfo
from ksm_exporter.readers.processes import ProcessNames
from ksm_exporter.readers.vm_processes import (
    ProcessReadErrors,
    ProcessReport,
    VmProcess,
    read_vm_processes,
)
from ksm_exporter.readers.vmstat import read_vmstat
from ksm_exporter.state.monitor import ReadErrors

# Labels of ksm_exporter_read_errors_total{file} for what this collector reads.
PROC = "proc"
VMSTAT = "vmstat"
KSMD_STAT = "ksmd/stat"
SMAPS_ROLLUP = "smaps_rollup"  # the PSS of Proxmox VE's kvm processes, for ksmtuned


@dataclass(frozen=True)
class ProcfsOptions:
    process_pattern: re.Pattern[str] | None  # None: --no-collector.process
    process_max: int
    ksmtuned_config: Path


class ProcfsCollector(Collector):
    def __init__(self, procfs: Path, options: ProcfsOptions, read_errors: ReadErrors) -> None:
        self.procfs = procfs
        self.options = options
        self.read_errors = read_errors
        self.process_errors = ProcessReadErrors()
        self.page_size = page_size()
        self.clock_ticks = clock_ticks()
        self.process_names = ProcessNameCache(self._name_matters)

    def _name_matters(self, name: str) -> bool:
        """A process whose name this collector reports on: checked at every scrape."""
        pattern = self.options.process_pattern
        return (
            name in (KSMD, KSMTUNED_NAME, PROXMOX_QEMU_NAME)
            or KSMTUNED_QEMU.search(name) is not None
            or (pattern is not None and pattern.search(name) is not None)
        )

    def _vms(self, names: ProcessNames) -> ProcessReport | None:
        pattern = self.options.process_pattern
        if pattern is None:
            return None
        return read_vm_processes(self.procfs, names, pattern, self.options.process_max)

    def vm_processes(self) -> tuple[VmProcess, ...] | None:
        """The VMs now, for the landing page; None with --no-collector.process."""
        report = self._vms(self.process_names.names(self.procfs))
        return None if report is None else report.processes

    def collect(self) -> Iterator[Metric]:
        tried: set[str] = {PROC, VMSTAT, KSMD_STAT}
        errors: dict[str, str] = {}
        names = self.process_names.names(self.procfs)
        if names.error is not None:
            errors[PROC] = names.error
        report = self._vms(names)
        if report is not None:
            self.process_errors.record(report)
            yield from vm_metrics(report, self.process_errors.counts())
        yield from self._ksmtuned(names, tried, errors)
        try:
            ksmd = read_ksmd_stat(self.procfs, names)
        except (OSError, ValueError) as e:
            errors[KSMD_STAT] = describe_error(e)
        else:
            if ksmd is not None:
                yield from ksmd_metrics(cpu_seconds(ksmd, self.clock_ticks))
        try:
            yield from vmstat_metrics(read_vmstat(self.procfs))
        except FileNotFoundError:
            pass  # a procfs without vmstat (a fixture tree): nothing to say
        except (OSError, ValueError) as e:
            errors[VMSTAT] = describe_error(e)
        self.read_errors.record(tried, errors, count=True)

    def _ksmtuned(
        self, names: ProcessNames, tried: set[str], errors: dict[str, str]
    ) -> Iterator[Metric]:
        config_file = self.options.ksmtuned_config
        tried.add(config_file.name)
        try:
            config, problems = read_ksmtuned_conf(config_file)
        except OSError as e:
            config, problems = KsmtunedConfig(), [describe_error(e)]
        if problems:
            errors[config_file.name] = "; ".join(problems)
        try:
            memory = read_meminfo(self.procfs)
        except (OSError, ValueError):  # counted by the KSM collector's read of the same file
            memory = None
        tried.add(SMAPS_ROLLUP)
        try:
            committed: int | None = committed_kb(
                self.procfs, names, self.page_size, config.KSM_PS_METRIC
            )
        except OSError as e:
            errors[SMAPS_ROLLUP] = describe_error(e)
            committed = None
        inputs = (
            ksmtuned_inputs(config, memory, committed)
            if memory is not None and committed is not None
            else None
        )
        yield from ksmtuned_metrics(inputs, committed, ksmtuned_alive(names))


def _describe(e: Exception) -> str:
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    return str(e)
