"""ksmtuned_*: the inputs of ksmtuned's decision to start or stop KSM."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from ksm_exporter.readers.ksmtuned import KIB, KsmtunedInputs


def ksmtuned_metrics(
    inputs: KsmtunedInputs | None, committed_kb: int | None, running: bool
) -> Iterator[Metric]:
    """`inputs` is None when /proc/meminfo or the committed memory could not be read;
    `committed_kb` None when a kvm process's PSS could not be read."""
    if committed_kb is not None:
        yield GaugeMetricFamily(
            "ksmtuned_committed_bytes",
            "Memory committed to qemu as ksmtuned counts it: the resident memory (ps rsz) "
            "of the processes named like qemu (pgrep '^qemu(-(kvm|system-.+)|:.{1,11})$'), "
            "plus, as Proxmox VE's ksmtuned counts them, KSM_PS_METRIC (default pss) of "
            "those named kvm (ps -C kvm).",
            value=committed_kb * KIB,
        )
    if inputs is not None:
        yield GaugeMetricFamily(
            "ksmtuned_threshold_bytes",
            "ksmtuned's threshold: MemTotal * KSM_THRES_COEF / 100, at least "
            "KSM_THRES_CONST kB (from --collector.ksmtuned.config, else ksmtuned's defaults).",
            value=inputs.threshold_kb * KIB,
        )
        yield GaugeMetricFamily(
            "ksmtuned_free_bytes",
            "Free memory as ksmtuned counts it: MemFree + Buffers + Cached.",
            value=inputs.free_kb * KIB,
        )
        yield GaugeMetricFamily(
            "ksmtuned_would_run",
            "What ksmtuned's next adjustment decides: 0 (stop KSM) when committed + "
            "threshold < MemTotal and free > threshold, else 1 (run KSM).",
            value=1.0 if inputs.would_run else 0.0,
        )
    yield GaugeMetricFamily(
        "ksmtuned_running",
        "1 when a ksmtuned process is alive.",
        value=1.0 if running else 0.0,
    )
