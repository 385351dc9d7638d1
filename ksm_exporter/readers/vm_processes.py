"""KSM per VM: which qemu processes KSM merges pages of, read from /proc/PID/ksm_stat."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from ksm_exporter.model.qemu import VmIdentity, vm_identity
from ksm_exporter.readers.process_ksm import NoKsmFiles, ProcessKsm, read_process_ksm
from ksm_exporter.readers.processes import ProcessNames, is_kernel_thread, read_cmdline

log = logging.getLogger(__name__)

# ksmtuned's own pattern for qemu processes (pgrep on the process name): qemu-kvm,
# qemu-system-x86 (the 15-character name of qemu-system-x86_64), and qemu:NAME, the name
# `-name NAME,process=qemu:NAME` gives.
QEMU_PATTERN = r"^qemu(-(kvm|system-.+)|:.{1,11})$"

# The VMs of every platform, by process name alone (no /proc/PID/exe, which takes ptrace
# rights over other users' processes): ksmtuned's names (libvirt, OpenStack, KubeVirt's
# virt-launcher: qemu-kvm or qemu-system-*; plain qemu) and `kvm`, the name of Proxmox VE's
# guests (qemu-server runs /usr/bin/kvm, a link to qemu-system-x86_64). Kernel threads
# are left out whatever their name.
VM_PATTERN = r"^(qemu(-(kvm|system-.+)|:.{1,11})|kvm)$"

VANISHED = "vanished"
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class VmProcess:
    pid: int
    identity: VmIdentity  # vm (qemu's -name guest name, else the process name), vmid...
    ksm: ProcessKsm

    @property
    def vm(self) -> str:
        return self.identity.vm


@dataclass(frozen=True)
class ProcessReport:
    processes: tuple[VmProcess, ...]  # by vm, then pid
    dropped: int = 0  # matched and read, but beyond --collector.process.max
    vanished: int = 0  # matched, then exited (or a zombie) before its files were read
    unreadable: int = 0  # matched, but its KSM file could not be read or parsed
    first_error: str | None = None  # what the first unreadable one said, for the log


def read_vm_processes(
    procfs: Path, names: ProcessNames, pattern: re.Pattern[str], limit: int
) -> ProcessReport:
    """The KSM state of the processes whose name matches `pattern`, at most `limit` of them:
    those with the most merging pages (then the lowest pids), so the series that matter
    stay when a node runs more VMs than the limit."""
    vanished = unreadable = 0
    first_error: str | None = None
    found: list[tuple[int, ProcessKsm]] = []
    for pid in sorted(pid for pid, name in names.names.items() if pattern.search(name)):
        try:
            found.append((pid, read_process_ksm(procfs, pid)))
        except (ProcessLookupError, FileNotFoundError):
            # A kernel thread has no memory, so its KSM files are empty, as a zombie's:
            # one named like a VM (kvm) is no VM, and has not vanished.
            if not is_kernel_thread(procfs, pid):
                vanished += 1
        except NoKsmFiles:
            continue  # a kernel before 5.19: nothing per process to export
        except (OSError, ValueError) as e:
            unreadable += 1
            first_error = first_error or f"{procfs}/{pid}: {e}"
    found.sort(key=lambda item: (-item[1].merging_pages, item[0]))
    processes: list[VmProcess] = []
    for pid, ksm in found[:limit]:
        try:
            argv = read_cmdline(procfs, pid)
        except (ProcessLookupError, FileNotFoundError):
            vanished += 1
            continue
        except OSError:  # hidden by hidepid: the process name still tells the VMs apart
            argv = []
        processes.append(VmProcess(pid, vm_identity(argv, names.names[pid]), ksm))
    processes.sort(key=lambda p: (p.vm, p.pid))
    return ProcessReport(
        processes=tuple(processes),
        dropped=max(0, len(found) - limit),
        vanished=vanished,
        unreadable=unreadable,
        first_error=first_error,
    )


class ProcessReadErrors:
    """Matched processes not exported because they vanished or could not be read, counted
    since start. Logs when processes start being unreadable (usually: the exporter is not
    root and lacks CAP_DAC_READ_SEARCH), and when they stop, not at every scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {VANISHED: 0, UNREADABLE: 0}
        self._failing = False

    def record(self, report: ProcessReport) -> None:
        with self._lock:
            self._counts[VANISHED] += report.vanished
            self._counts[UNREADABLE] += report.unreadable
            if report.unreadable and not self._failing:
                log.warning(
                    "cannot read the KSM state of %d matching processes (run as root or with "
                    "CAP_DAC_READ_SEARCH): %s",
                    report.unreadable,
                    report.first_error,
                )
            elif self._failing and not report.unreadable:
                log.info("the KSM state of every matching process is readable again")
            self._failing = bool(report.unreadable)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
