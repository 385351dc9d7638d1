"""What ksmtuned decides from, computed as its script computes it.

Every KSM_MONITOR_INTERVAL seconds ksmtuned (a bash script) does, in kB:

    thres = MemTotal * KSM_THRES_COEF / 100, at least KSM_THRES_CONST
    committed = sum of `ps -o rsz=` over `pgrep '^qemu(-(kvm|system-.+)|:.{1,11})$'`
                (Fedora, RHEL, Debian), or of `ps -C kvm -o $KSM_PS_METRIC` (Proxmox VE)
    free = MemFree + Buffers + Cached
    if committed + thres < MemTotal and free > thres: stop KSM (echo 0 > run)
    else: start KSM (echo 1 > run), boosting pages_to_scan while free < thres

so KSM flaps on and off when free memory hovers around the threshold. The same integer
arithmetic is done here, in kB, and exported in bytes.

Proxmox VE's ksmtuned (package ksm-control-daemon, github.com/proxmox/ksm-control-daemon)
patches the script: debian/patches/ksmtuned.diff makes committed_memory() count
`ps -C kvm` (qemu-server's guests are named kvm) instead of qemu-kvm, and
use-pss-instead-of-rsz.diff sums `ps -o $KSM_PS_METRIC`, pss unless ksmtuned.conf says
otherwise. A node runs one platform, so both counts are made and added: the qemu-named
processes as Fedora's ksmtuned counts them, the kvm-named as Proxmox VE's does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ksm_exporter.model.derived import KIB
from ksm_exporter.model.edge_cause import ksmtuned_would_run
from ksm_exporter.readers.ksmtuned_conf import KsmtunedConfig
from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.readers.processes import (
    ProcessNames,
    read_pss_kb,
    read_rss_pages,
    read_vsz_pages,
)
from ksm_exporter.readers.vm_processes import QEMU_PATTERN

# ksmtuned counts the processes its pgrep finds, whatever --collector.process.pattern says.
KSMTUNED_QEMU = re.compile(QEMU_PATTERN)

# Proxmox VE's ksmtuned: `ps -C kvm`, an exact match of the process name.
PROXMOX_QEMU_NAME = "kvm"

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


def process_kb(procfs: Path, pid: int, ps_metric: str, page_size: int) -> int:
    """What `ps -o <ps_metric>` prints for a process, in kB. Raises OSError or ValueError."""
    if ps_metric == "pss":
        return read_pss_kb(procfs, pid)
    if ps_metric in ("vsz", "vsize"):
        return read_vsz_pages(procfs, pid) * (page_size // KIB)
    return read_rss_pages(procfs, pid) * (page_size // KIB)


def committed_kb(procfs: Path, names: ProcessNames, page_size: int, ps_metric: str = "pss") -> int:
    """The memory of the processes ksmtuned counts as qemu, in kB as ps prints it: the
    resident size of the qemu-named ones, `ps_metric` (KSM_PS_METRIC) of those named kvm.
    One that exits meanwhile counts for nothing, as with ps. Raises OSError when a kvm
    process's PSS could not be read (smaps_rollup takes ptrace read access: root, or the
    process's own user): the sum would be short of what ksmtuned, as root, sees."""
    total = 0
    for pid, name in names.names.items():
        if KSMTUNED_QEMU.search(name):
            metric = "rsz"
        elif name == PROXMOX_QEMU_NAME:
            metric = ps_metric
        else:
            continue
        try:
            total += process_kb(procfs, pid, metric, page_size)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # exited (a zombie's files are empty)
        except OSError as e:
            if metric != "pss":
                continue  # statm is readable by all: it only fails for a process gone
            raise OSError(e.errno, f"{e.strerror} ({procfs}/{pid}/smaps_rollup)") from e
    return total


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
