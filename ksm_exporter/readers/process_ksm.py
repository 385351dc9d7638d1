"""Read the KSM state of one process: /proc/PID/ksm_stat, or /proc/PID/ksm_merging_pages.

What the kernel prints differs by version, so every line is parsed and kept:
- 5.19: only /proc/PID/ksm_merging_pages (one number);
- 6.1: ksm_stat with `ksm_rmap_items N`;
- 6.4: adds `ksm_merging_pages N` and `ksm_process_profit N` (bytes, may be negative);
- 6.10: adds `ksm_zero_pages N`;
- 6.14: adds `ksm_merge_any: yes|no` and `ksm_mergeable: yes|no`.
Both files are mode 0400, owned by the process's user: reading another user's takes root
or CAP_DAC_READ_SEARCH (CAP_SYS_PTRACE does not do). A PermissionError is for the caller
to count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ksm_exporter.readers import parse_kernel_int, read_bytes

MERGING_PAGES = "ksm_merging_pages"


@dataclass(frozen=True)
class ProcessKsm:
    values: dict[str, int] = field(default_factory=dict)  # ksm_rmap_items -> 123 ...
    flags: dict[str, bool] = field(default_factory=dict)  # ksm_merge_any -> True ...

    @property
    def merging_pages(self) -> int:
        return self.values.get(MERGING_PAGES, 0)


def parse_ksm_stat(text: str) -> ProcessKsm:
    """`name N` and `name: yes|no` lines; a line of another shape is skipped (a future
    kernel's), a known shape with a bad value is a ValueError."""
    values: dict[str, int] = {}
    flags: dict[str, bool] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        name, value = parts[0].rstrip(":"), parts[1]
        if value in ("yes", "no"):
            flags[name] = value == "yes"
        else:
            # Signed for all: ksm_process_profit is, and no page count comes near 2^63.
            values[name] = parse_kernel_int(value, f"ksm_stat: {name}", signed=True)
    return ProcessKsm(values=values, flags=flags)


class NoKsmFiles(Exception):
    """The kernel has neither ksm_stat nor ksm_merging_pages (before 5.19)."""


def read_process_ksm(procfs: Path, pid: int) -> ProcessKsm:
    """The process's KSM state.

    Raises ProcessLookupError when it is gone (including a zombie: its files are empty),
    NoKsmFiles when the kernel has no per-process KSM files, other OSError (such as
    PermissionError) or ValueError when it could not be read.
    """
    base = f"{procfs}/{pid}"
    ksm = ProcessKsm()  # what ksm_stat says, if the kernel has it
    try:
        stat = read_bytes(f"{base}/ksm_stat", 4096)
    except FileNotFoundError:
        stat = None
    if stat is not None:
        if not stat:  # no mm: exited and not yet reaped
            raise ProcessLookupError(pid)
        ksm = parse_ksm_stat(stat.decode("ascii", "replace"))
        if MERGING_PAGES in ksm.values:
            return ksm
    try:
        merging = read_bytes(f"{base}/{MERGING_PAGES}", 64)
    except FileNotFoundError:
        if stat is not None or not os.path.isdir(base):
            raise ProcessLookupError(pid) from None
        raise NoKsmFiles(pid) from None
    if not merging:
        raise ProcessLookupError(pid)
    pages = parse_kernel_int(merging, MERGING_PAGES)
    return ProcessKsm(values={**ksm.values, MERGING_PAGES: pages}, flags=ksm.flags)
