"""Values computed from one KSM reading, as checkKSM_pages_info.sh does."""

from __future__ import annotations

import enum
import os

# The `run` file can carry KSM_RUN_OFFLINE (4) while memory is being hot-removed.
RUN_MERGE = 1
RUN_UNMERGE = 2
RUN_OFFLINE = 4


class RunState(str, enum.Enum):
    STOPPED = "stopped"
    RUNNING = "running"
    UNMERGING = "unmerging"


def run_state(run: int) -> RunState:
    """Map the raw `run` value to a state, ignoring the offline bit."""
    if run & RUN_UNMERGE:
        return RunState.UNMERGING
    if run & RUN_MERGE:
        return RunState.RUNNING
    return RunState.STOPPED


def is_running(run: int) -> bool:
    """What checkKSM_start_time.sh calls running: run == 1, offline bit ignored."""
    return run & ~RUN_OFFLINE == RUN_MERGE


def page_size() -> int:
    return os.sysconf("SC_PAGESIZE")


def saved_bytes(pages_sharing: int, page_bytes: int) -> int:
    """checkKSM_pages_info.sh's "KSM saved": pages_sharing x page size."""
    return pages_sharing * page_bytes


def sharing_ratio(pages_sharing: int, pages_shared: int) -> float:
    """checkKSM_pages_info.sh's "Sharing_Rate": pages_sharing / pages_shared; 0 (never
    NaN) when nothing is shared."""
    if pages_shared <= 0:
        return 0.0
    return pages_sharing / pages_shared


KIB = 1024
MIB = 1024 * 1024


def mebibytes(n: int) -> int:
    """Bytes to whole MB the way `free -m` and checkKSM_pages_info.sh's shell arithmetic do."""
    return n // MIB


def awk_number(x: float) -> str:
    """awk's number-to-string conversion: integral values as integers, others %.6g."""
    if x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return f"{x:.6g}"
