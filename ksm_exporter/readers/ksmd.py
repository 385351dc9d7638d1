"""CPU time of the ksmd kernel thread, from <procfs>/<pid>/stat."""

from __future__ import annotations

import os
from pathlib import Path

from . import read_small_file

# include/linux/sched.h: set on kernel threads. A user process may call itself "ksmd";
# only the kernel thread counts.
PF_KTHREAD = 0x00200000


def _stat_fields(text: str) -> list[str]:
    """Fields after `(comm)`: field 3 (state) is index 0. comm may hold spaces and ')'."""
    return text[text.rindex(")") + 2 :].split()


def find_ksmd(procfs: Path) -> Path | None:
    """The <procfs>/<pid> directory of ksmd, or None (no KSM, or procfs unreadable)."""
    try:
        entries = os.listdir(procfs)
    except OSError:
        return None
    for name in entries:
        if not name.isdigit():
            continue
        pid_dir = procfs / name
        try:
            if read_small_file(pid_dir / "comm").strip() != "ksmd":
                continue
            flags = int(_stat_fields(read_small_file(pid_dir / "stat"))[6])
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked, or not a process directory
        if flags & PF_KTHREAD:
            return pid_dir
    return None


def ksmd_cpu_seconds(procfs: Path) -> float | None:
    """utime + stime of ksmd in seconds; None when there is no ksmd or its stat is unreadable."""
    pid_dir = find_ksmd(procfs)
    if pid_dir is None:
        return None
    try:
        fields = _stat_fields(read_small_file(pid_dir / "stat"))
        ticks = int(fields[11]) + int(fields[12])  # stat fields 14 (utime) and 15 (stime)
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")
