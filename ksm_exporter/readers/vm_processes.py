"""KSM per VM: which qemu processes KSM merges pages of, read from /proc/PID/ksm_stat."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ksm_exporter.model.defaults import QEMU_PATTERN, VM_PATTERN
from ksm_exporter.model.qemu import VmIdentity, vm_identity
from ksm_exporter.readers.process_ksm import NoKsmFiles, ProcessKsm, read_process_ksm
from ksm_exporter.readers.processes import ProcessNames, is_kernel_thread, read_cmdline

__all__ = ["QEMU_PATTERN", "VM_PATTERN", "ProcessReport", "VmProcess", "read_vm_processes"]


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
