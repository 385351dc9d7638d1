"""Write fake /proc/PID directories in the formats the kernel prints (tests and bench)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# /proc/PID/stat flags: PF_KTHREAD | PF_NOFREEZE for a kernel thread (as ksmd has),
# PF_RANDOMIZE | PF_FORKNOEXEC for a user process.
KTHREAD_FLAGS = 0x00208040
USER_FLAGS = 0x00400140


def stat_line(
    pid: int, comm: str, state: str, kernel_thread: bool, utime: int, stime: int, rss: int
) -> str:
    # The 52 fields of Linux 6.x; the ones the exporter reads are set from the arguments.
    ppid, flags = ("2", KTHREAD_FLAGS) if kernel_thread else ("1", USER_FLAGS)
    fields = [str(pid), f"({comm})", state, ppid, str(pid), str(pid), "0", "-1", str(flags)]
    fields += ["100", "0", "0", "0", str(utime), str(stime), "0", "0", "20", "0", "1", "0"]
    fields += ["100", str(rss * 4096), str(rss)] + ["0"] * 28
    return " ".join(fields) + "\n"


def write_process(
    proc: Path,
    pid: int,
    comm: str,
    *,
    cmdline: Sequence[str] = (),
    state: str = "S",
    kernel_thread: bool = False,
    utime: int = 0,
    stime: int = 0,
    rss_pages: int = 0,
    ksm_stat: str | None = None,
    ksm_merging_pages: int | None = None,
) -> Path:
    """A process directory with comm, stat, statm, cmdline and, if given, the KSM files.
    `ksm_stat` is the file's text; a kernel thread or zombie has an empty one."""
    d = proc / str(pid)
    d.mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    (d / "stat").write_text(stat_line(pid, comm, state, kernel_thread, utime, stime, rss_pages))
    if rss_pages:
        statm = f"{rss_pages + 1000} {rss_pages} {rss_pages // 10} 500 0 {rss_pages} 0\n"
    else:  # kernel threads and zombies have no memory
        statm = "0 0 0 0 0 0 0\n"
    (d / "statm").write_text(statm)
    (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in cmdline))
    if ksm_stat is not None:
        (d / "ksm_stat").write_text(ksm_stat)
    if ksm_merging_pages is not None:
        (d / "ksm_merging_pages").write_text(f"{ksm_merging_pages}\n")
    return d


def ksm_stat_6_18(rmap_items: int, zero_pages: int, merging_pages: int, page_size: int) -> str:
    """ksm_stat as Linux 6.14+ prints it; profit as the kernel computes it (64-byte rmap_item)."""
    profit = (merging_pages + zero_pages) * page_size - rmap_items * 64
    return (
        f"ksm_rmap_items {rmap_items}\nksm_zero_pages {zero_pages}\n"
        f"ksm_merging_pages {merging_pages}\nksm_process_profit {profit}\n"
        "ksm_merge_any: no\nksm_mergeable: yes\n"
    )
