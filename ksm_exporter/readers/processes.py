"""Read processes from <procfs>: every name, and a few files of chosen processes.

Read by hand rather than through psutil, for two reasons:
- speed: naming every process is one open/read/close of /proc/PID/comm per process. On
  10,000 processes psutil.process_iter(["name"]) takes about three times as long as the
  loop below, which costs little more than those bare system calls (bench/process_scrape.py);
- purity: psutil reads the one global psutil.PROCFS_PATH, while a reader is a function
  of the root it is given (the tests read several fixture trees in one process).
The formats parsed here (stat, statm, cmdline) have been stable since Linux 2.6; the comm
file came in 2.6.33, before it the name is read from stat.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ksm_exporter.readers import describe_error, parse_kernel_int, read_bytes

# /proc/PID/stat's flags bit for kernel threads (include/linux/sched.h).
PF_KTHREAD = 0x00200000

# Command lines of libvirt's qemu run to several kB; -name comes early, so a cut-off
# command line still names the VM.
MAX_CMDLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ProcessNames:
    """The name (comm) of every process at one moment."""

    names: dict[int, str] = field(default_factory=dict)
    error: str | None = None  # why the procfs root could not be listed

    @property
    def others_hidden(self) -> bool:
        """Whether <procfs> hides processes of other users (hidepid=, systemd's
        ProtectProc=invisible, or PrivateUsers= leaving us without CAP_SYS_PTRACE over
        them): every pid namespace has a pid 1, so a listing without it is not complete,
        and "no ksmtuned among them" would not mean that none runs."""
        return self.error is None and 1 not in self.names

    @property
    def complete(self) -> bool:
        """Listed, and nothing hidden: every process of the node is in it."""
        return self.error is None and not self.others_hidden


def list_pids(procfs: Path) -> list[int]:
    """The pids under <procfs>. Raises OSError when the root cannot be listed."""
    return [int(entry) for entry in os.listdir(procfs) if entry.isascii() and entry.isdigit()]


def read_names(procfs: Path, pids: Iterable[int]) -> dict[int, str]:
    """pid -> comm of the given processes; one that exits while being read is left out."""
    names: dict[int, str] = {}
    prefix = f"{procfs}/"
    name_file = "/comm"
    # The hot loop of a scrape: os.open/os.read rather than open() (half the time), and
    # no per-process objects.
    for pid in pids:
        entry = str(pid)
        try:
            data = read_bytes(prefix + entry + name_file, 512)
        except FileNotFoundError:
            if name_file == "/stat":
                continue  # exited since listdir
            try:  # no comm file: Linux before 2.6.33, or this process exited
                data = read_bytes(prefix + entry + "/stat", 512)
            except OSError:
                continue
            name_file = "/stat"
        except OSError:  # exited since listdir, or hidden from us (hidepid)
            continue
        if name_file == "/stat":
            data = data[data.find(b"(") + 1 : data.rfind(b")")]
        names[pid] = data.rstrip(b"\n").decode("utf-8", "replace")
    return names


def read_process_names(procfs: Path) -> ProcessNames:
    """pid -> comm of every process; one that exits while being read is left out."""
    try:
        pids = list_pids(procfs)
    except OSError as e:
        return ProcessNames(error=describe_error(e))
    return ProcessNames(names=read_names(procfs, pids))


def read_cmdline(procfs: Path, pid: int) -> list[str]:
    """argv of a process; empty for kernel threads and zombies. Raises OSError."""
    data = read_bytes(f"{procfs}/{pid}/cmdline", MAX_CMDLINE_BYTES)
    if not data:
        return []
    return data.rstrip(b"\0").decode("utf-8", "replace").split("\0")


def read_statm(procfs: Path, pid: int) -> list[bytes]:
    """The fields of /proc/PID/statm (pages). Raises OSError or ValueError."""
    fields = read_bytes(f"{procfs}/{pid}/statm", 256).split()
    if len(fields) < 2:
        raise ValueError("statm: fewer than 2 fields")
    return fields


def read_rss_pages(procfs: Path, pid: int) -> int:
    """Resident pages from /proc/PID/statm: what ps prints as rsz (in kB) once multiplied
    by the page size. Raises OSError or ValueError."""
    return parse_kernel_int(read_statm(procfs, pid)[1], "statm")


def read_vsz_pages(procfs: Path, pid: int) -> int:
    """Virtual memory pages from /proc/PID/statm: ps's vsz once multiplied by the page size."""
    return parse_kernel_int(read_statm(procfs, pid)[0], "statm")


def read_pss_kb(procfs: Path, pid: int) -> int:
    """The proportional set size in kB, from /proc/PID/smaps_rollup (Linux 4.14+), as ps
    prints pss: a merged page counts 1/N to each of the N processes mapping it. Empty
    for a kernel thread or a zombie: 0, as ps prints. Reading another user's process
    takes ptrace read access (PermissionError). Raises OSError or ValueError."""
    data = read_bytes(f"{procfs}/{pid}/smaps_rollup", 4096)
    for line in data.splitlines():
        if line.startswith(b"Pss:"):
            return parse_kernel_int(line.split()[1], "smaps_rollup")
    if not data:
        return 0
    raise ValueError("smaps_rollup: no Pss line")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat this exporter uses."""

    comm: str
    flags: int
    utime_ticks: int  # user CPU time in clock ticks (sysconf SC_CLK_TCK)
    stime_ticks: int  # system CPU time in clock ticks
    state: str = "R"  # R, S, D ... Z (zombie), X (dead)
    start_ticks: int | None = None  # when it started, in clock ticks after boot

    @property
    def alive(self) -> bool:
        """Neither a zombie (exited, not yet reaped) nor dead."""
        return self.state not in ("Z", "X")

    @property
    def kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)


def parse_stat(text: str) -> ProcStat:
    """Parse /proc/PID/stat. comm may hold spaces and parentheses, so it ends at the last
    ')'; the fields after it are numbered from 3 (state) as in proc(5)."""
    open_paren, close_paren = text.find("("), text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ValueError("stat: no (comm)")
    rest = text[close_paren + 1 :].split()
    if len(rest) < 13:
        raise ValueError(f"stat: {len(rest) + 2} fields, expected at least 15")
    # rest[0] is field 3 (state): flags is field 9, utime 14, stime 15, starttime 22.
    return ProcStat(
        comm=text[open_paren + 1 : close_paren],
        flags=parse_kernel_int(rest[6], "stat: flags"),
        utime_ticks=parse_kernel_int(rest[11], "stat: utime"),
        stime_ticks=parse_kernel_int(rest[12], "stat: stime"),
        state=rest[0],
        start_ticks=parse_kernel_int(rest[19], "stat: starttime") if len(rest) > 19 else None,
    )


def read_stat(procfs: Path, pid: int) -> ProcStat:
    """Raises OSError or ValueError."""
    return parse_stat(read_bytes(f"{procfs}/{pid}/stat", 4096).decode("utf-8", "replace"))


def is_kernel_thread(procfs: Path, pid: int) -> bool:
    """True for a kernel thread (PF_KTHREAD in stat's flags); False for a user process,
    and for one whose stat could not be read (gone)."""
    try:
        return read_stat(procfs, pid).kernel_thread
    except (OSError, ValueError):
        return False
