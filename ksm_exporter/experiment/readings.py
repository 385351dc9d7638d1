"""The experiment's readings of KSM and memory, and what it prints and tabulates from
them: checkKSM_pages_info.sh's figures and `free -m`'s, and the matrices."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ksm_exporter.experiment.matrix import Matrix
from ksm_exporter.model.derived import awk_number, mebibytes, saved_bytes, sharing_ratio
from ksm_exporter.readers import Paths
from ksm_exporter.readers.ksmd import clock_ticks, cpu_seconds, read_ksmd_stat
from ksm_exporter.readers.meminfo import MemInfo, read_meminfo
from ksm_exporter.readers.processes import read_process_names
from ksm_exporter.readers.sysfs_ksm import read_ksm

_SAMPLED = ("run", "full_scans", "pages_sharing", "pages_shared", "general_profit", "pages_scanned")


class ExperimentError(RuntimeError):
    """The run cannot go on; the message is one line for the operator."""


@dataclass(frozen=True)
class Reading:
    at: float  # time.monotonic()
    run: int
    full_scans: int
    pages_sharing: int
    pages_shared: int
    general_profit: int | None
    pages_scanned: int | None  # absent on older kernels
    mem: MemInfo
    ksmd_cpu: float | None


def ksmd_cpu_seconds(procfs: Path) -> float | None:
    """utime + stime of the ksmd kernel thread, read as the daemon reads it; None without
    ksmd or when its stat cannot be read (the matrix then shows `-`)."""
    try:
        stat = read_ksmd_stat(procfs, read_process_names(procfs))
    except (OSError, ValueError):
        return None
    return None if stat is None else cpu_seconds(stat, clock_ticks())


def take_reading(paths: Paths) -> Reading:
    ksm = read_ksm(paths.ksm_dir, only=_SAMPLED)
    missing = [n for n in _SAMPLED[:4] if n not in ksm.values]
    if not ksm.present or missing:
        why = "; ".join(f"{n}: {ksm.errors.get(n, 'missing')}" for n in missing)
        raise ExperimentError(f"cannot read {paths.ksm_dir}: {why or 'absent'}")
    try:
        mem = read_meminfo(paths.procfs)
    except (OSError, ValueError) as e:
        raise ExperimentError(f"cannot read {paths.procfs}/meminfo: {e}") from None
    v = ksm.values
    return Reading(
        at=time.monotonic(),
        run=v["run"],
        full_scans=v["full_scans"],
        pages_sharing=v["pages_sharing"],
        pages_shared=v["pages_shared"],
        general_profit=v.get("general_profit"),
        pages_scanned=v.get("pages_scanned"),
        mem=mem,
        ksmd_cpu=ksmd_cpu_seconds(paths.procfs),
    )


def _cpu_between(first: Reading, last: Reading) -> float | None:
    if first.ksmd_cpu is None or last.ksmd_cpu is None:
        return None
    return round(last.ksmd_cpu - first.ksmd_cpu, 2)


def make_matrix(first: Reading, last: Reading, page: int, settle_seconds: float | None) -> Matrix:
    """The matrix of the phase from `first` to `last`, its state as of `last`."""
    return Matrix(
        used_mb=mebibytes(last.mem.used),
        free_mb=mebibytes(last.mem.free),
        saved_mb=mebibytes(saved_bytes(last.pages_sharing, page)),
        sharing_rate=sharing_ratio(last.pages_sharing, last.pages_shared),
        general_profit_bytes=last.general_profit,
        full_scans=last.full_scans - first.full_scans,
        settle_seconds=settle_seconds,
        ksmd_cpu_seconds=_cpu_between(first, last),
    )


def status_line(r: Reading, page: int) -> str:
    """checkKSM_pages_info.sh's key figures and `free -m`'s, on one line."""
    rate = awk_number(sharing_ratio(r.pages_sharing, r.pages_shared))
    return (
        f"KSM saved: {mebibytes(saved_bytes(r.pages_sharing, page))} MB, "
        f"Sharing_Rate: {rate}, Pages_Sharing: {r.pages_sharing}, "
        f"Pages_Shared: {r.pages_shared}, Full_Scans: {r.full_scans}; "
        f"{mebibytes(r.mem.used)} MB used, {mebibytes(r.mem.free)} MB free"
    )
