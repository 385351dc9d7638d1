"""ksmd, the kernel thread that scans and merges: what its work costs in CPU."""

from __future__ import annotations

import os
from pathlib import Path

from ksm_exporter.readers.processes import ProcessNames, ProcStat, read_stat

KSMD = "ksmd"


def read_ksmd_stat(procfs: Path, names: ProcessNames) -> ProcStat | None:
    """/proc/PID/stat of the ksmd kernel thread; None without KSM. A user process that
    calls itself ksmd is no kernel thread and is passed over. Raises OSError or ValueError
    when ksmd's stat cannot be read."""
    failed: Exception | None = None
    for pid in sorted(pid for pid, name in names.names.items() if name == KSMD):
        try:
            stat = read_stat(procfs, pid)
        except (OSError, ValueError) as e:
            failed = e
            continue
        if stat.kernel_thread and stat.comm == KSMD:
            return stat
    if failed is not None:
        raise failed
    return None


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat: ProcStat, ticks_per_second: int) -> float:
    """User plus system time: ksmd, a kernel thread, spends it all in the kernel."""
    return (stat.utime_ticks + stat.stime_ticks) / ticks_per_second
