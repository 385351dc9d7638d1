"""The ksmtuned collector: the inputs of ksmtuned's decision to start or stop KSM.

Its figures come from the process table (is ksmtuned alive, what qemu processes hold),
meminfo and ksmtuned.conf. When /proc hides other users' processes, ksmtuned_running,
ksmtuned_committed_bytes and ksmtuned_would_run are left out: "no ksmtuned and no qemu
among the processes we can see" says nothing about the node."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric

from ksm_exporter.collectors.source import Collected, ScrapeContext, process_table_missing
from ksm_exporter.readers import describe_error
from ksm_exporter.readers.ksmtuned import (
    KIB,
    committed_kb,
    free_kb,
    ksmtuned_alive,
    ksmtuned_inputs,
    threshold_kb,
)
from ksm_exporter.readers.ksmtuned_conf import CONFIG_OPTION, KsmtunedConfig, read_ksmtuned_conf
from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.state.read_errors import ReadErrors

# Declared with the reader: `watch --explain` takes the same flag without loading a collector.
OPTIONS = (CONFIG_OPTION,)

SMAPS_ROLLUP = "smaps_rollup"  # the PSS of Proxmox VE's kvm processes, for ksmtuned


@dataclass(frozen=True)
class KsmtunedReading:
    """One scrape's look; None where the source could not be observed."""

    config: KsmtunedConfig | None  # None: no configuration file, ksmtuned not installed
    memory: MemInfo | None
    committed_kb: int | None  # None: the process table is incomplete, or a PSS unreadable
    running: bool | None


class KsmtunedCollector:
    def __init__(self, config_file: Path, page_size: int, read_errors: ReadErrors) -> None:
        self.config_file = config_file
        self.page_size = page_size
        self.read_errors = read_errors

    def collect(self, ctx: ScrapeContext) -> Collected:
        label = self.config_file.name
        missing: list[str] = []
        config: KsmtunedConfig | None = None
        # No configuration file: ksmtuned is not installed here (every package ships one),
        # or the exporter sees another /etc than ksmtuned's: no threshold to report. One
        # that cannot be read: no threshold either, and said (not ksmtuned's defaults).
        try:
            found = read_ksmtuned_conf(self.config_file)
        except OSError as e:
            missing.append(f"{label}: {describe_error(e)}")
            self.read_errors.scrape_read({label}, {label: describe_error(e)})
        else:
            if found is not None:
                config, problems = found
                errors = {label: "; ".join(problems)} if problems else {}
                self.read_errors.scrape_read({label}, errors)
        memory = ctx.meminfo()
        if isinstance(memory, str):
            missing.append(f"meminfo: {memory}")
            memory = None
        names = ctx.process_names()
        hidden = process_table_missing(names)
        if hidden is not None:
            missing.append(hidden)
            reading = KsmtunedReading(config, memory, None, None)
        else:
            committed: int | None = None
            try:
                ps_metric = config.KSM_PS_METRIC if config is not None else "pss"
                committed = committed_kb(ctx.procfs, names, self.page_size, ps_metric)
                self.read_errors.scrape_read({SMAPS_ROLLUP}, {})
            except OSError as e:  # a kvm process's PSS: the sum would be short
                self.read_errors.scrape_read({SMAPS_ROLLUP}, {SMAPS_ROLLUP: describe_error(e)})
                missing.append(f"committed memory: {describe_error(e)}")
            reading = KsmtunedReading(config, memory, committed, ksmtuned_alive(names))
        return Collected(tuple(ksmtuned_metrics(reading)), "; ".join(missing) or None)


def ksmtuned_metrics(r: KsmtunedReading) -> Iterator[Metric]:
    if r.committed_kb is not None:
        yield GaugeMetricFamily(
            "ksmtuned_committed_bytes",
            "Memory committed to qemu as ksmtuned counts it: the resident memory (ps rsz) "
            "of the processes named like qemu (pgrep '^qemu(-(kvm|system-.+)|:.{1,11})$'), "
            "plus, as Proxmox VE's ksmtuned counts them, KSM_PS_METRIC (default pss) of "
            "those named kvm (ps -C kvm).",
            value=r.committed_kb * KIB,
        )
    if r.memory is not None:
        yield GaugeMetricFamily(
            "ksmtuned_free_bytes",
            "Free memory as ksmtuned counts it: MemFree + Buffers + Cached.",
            value=free_kb(r.memory) * KIB,
        )
    if r.memory is not None and r.config is not None:
        yield GaugeMetricFamily(
            "ksmtuned_threshold_bytes",
            "ksmtuned's threshold: MemTotal * KSM_THRES_COEF / 100, at least "
            "KSM_THRES_CONST kB (from --collector.ksmtuned.config; absent without that file).",
            value=threshold_kb(r.memory.total // KIB, r.config) * KIB,
        )
        if r.committed_kb is not None:
            inputs = ksmtuned_inputs(r.config, r.memory, r.committed_kb)
            yield GaugeMetricFamily(
                "ksmtuned_would_run",
                "What ksmtuned's next adjustment decides: 0 (stop KSM) when committed + "
                "threshold < MemTotal and free > threshold, else 1 (run KSM).",
                value=1.0 if inputs.would_run else 0.0,
            )
    if r.running is not None:
        yield GaugeMetricFamily(
            "ksmtuned_running",
            "1 when a ksmtuned process is alive.",
            value=1.0 if r.running else 0.0,
        )
