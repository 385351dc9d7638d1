"""What ksmtuned decides from, computed as its script computes it.

Every KSM_MONITOR_INTERVAL seconds ksmtuned (a bash script) does, in kB:

    thres = MemTotal * KSM_THRES_COEF / 100, at least KSM_THRES_CONST
    committed = sum of `ps -o rsz=` over `pgrep '^qemu(-(kvm|system-.+)|:.{1,11})$'`
    free = MemFree + Buffers + Cached
    if committed + thres < MemTotal and free > thres: stop KSM (echo 0 > run)
    else: start KSM (echo 1 > run), boosting pages_to_scan while free < thres

so KSM flaps on and off when free memory hovers around the threshold. The same integer
arithmetic is done here, in kB, and exported in bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ksm_exporter.model.derived import KIB
from ksm_exporter.model.edge_cause import ksmtuned_would_run
from ksm_exporter.readers.ksmtuned_conf import KsmtunedConfig
from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.readers.processes import ProcessNames, read_rss_pages
from ksm_exporter.readers.vm_processes import QEMU_PATTERN

# ksmtuned counts the processes its pgrep finds, whatever --collector.process.pattern says.
KSMTUNED_QEMU = re.compile(QEMU_PATTERN)

# ksmtuned runs as a script, so its process name is the script's file name.
KSMTUNED_NAME = "ksmtuned"


def shell_divide(a: int, b: int) -> int:
    """bash's $[a / b]: C division, rounding toward zero (Python's // rounds down)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def threshold_kb(total_kb: int, config: KsmtunedConfig) -> int:
    thres = shell_divide(total_kb * config.KSM_THRES_COEF, 100)
    return max(thres, config.KSM_THRES_CONST)


def free_kb(memory: MemInfo) -> int:
    return (memory.free + memory.buffers + memory.cached) // KIB


def committed_kb(procfs: Path, names: ProcessNames, page_size: int) -> int:
    """The resident memory of the processes ksmtuned counts as qemu, in kB as ps prints it.
    One that exits meanwhile counts for nothing, as with ps."""
    total_pages = 0
    for pid, name in names.names.items():
        if KSMTUNED_QEMU.search(name):
            try:
                total_pages += read_rss_pages(procfs, pid)
            except (OSError, ValueError):
                continue
    return total_pages * (page_size // KIB)


def ksmtuned_alive(names: ProcessNames) -> bool:
    return KSMTUNED_NAME in names.names.values()


@dataclass(frozen=True)
class KsmtunedInputs:
    """kB, as ksmtuned computes them."""

    total_kb: int
    threshold_kb: int
    committed_kb: int
    free_kb: int

    @property
    def would_run(self) -> bool:
        """False exactly when ksmtuned's next adjustment stops KSM."""
        return ksmtuned_would_run(self.total_kb, self.threshold_kb, self.committed_kb, self.free_kb)


def ksmtuned_inputs(config: KsmtunedConfig, memory: MemInfo, committed: int) -> KsmtunedInputs:
    total = memory.total // KIB
    return KsmtunedInputs(
        total_kb=total,
        threshold_kb=threshold_kb(total, config),
        committed_kb=committed,
        free_kb=free_kb(memory),
    )
