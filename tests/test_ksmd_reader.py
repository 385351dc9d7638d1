"""readers.ksmd: ksmd's CPU seconds from a procfs tree (fake ones, and this machine's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ksm_exporter.readers.ksmd import PF_KTHREAD, find_ksmd, ksmd_cpu_seconds

TICK = os.sysconf("SC_CLK_TCK")


def add_process(procfs: Path, pid: int, comm: str, flags: int, utime: int, stime: int) -> None:
    d = procfs / str(pid)
    d.mkdir(parents=True)
    (d / "comm").write_text(f"{comm}\n")
    # Fields 3..17 of /proc/PID/stat; flags is field 9, utime 14, stime 15.
    rest = f"S 2 0 0 0 -1 {flags} 0 0 0 0 {utime} {stime} 0 0 20 0 1 0 27"
    (d / "stat").write_text(f"{pid} ({comm}) {rest}\n")


def test_sums_utime_and_stime_of_the_kernel_thread(tmp_path: Path) -> None:
    add_process(tmp_path, 1, "init", 0x400100, 50, 60)
    add_process(tmp_path, 37, "ksmd", 0x200040, 3 * TICK, 2 * TICK)
    (tmp_path / "self").mkdir()  # non-numeric entries are not processes
    assert find_ksmd(tmp_path) == tmp_path / "37"
    assert ksmd_cpu_seconds(tmp_path) == pytest.approx(5.0)


def test_a_user_process_named_ksmd_is_not_ksmd(tmp_path: Path) -> None:
    add_process(tmp_path, 900, "ksmd", 0x400100, 7 * TICK, 0)
    assert ksmd_cpu_seconds(tmp_path) is None
    add_process(tmp_path, 37, "ksmd", PF_KTHREAD, 1 * TICK, 0)
    assert ksmd_cpu_seconds(tmp_path) == pytest.approx(1.0)


def test_comm_with_parenthesis_and_spaces_does_not_shift_fields(tmp_path: Path) -> None:
    add_process(tmp_path, 5, "a) b (c", 0, 99 * TICK, 0)
    add_process(tmp_path, 37, "ksmd", PF_KTHREAD, TICK, TICK)
    assert ksmd_cpu_seconds(tmp_path) == pytest.approx(2.0)


@pytest.mark.parametrize("stat", ["", "37 (ksmd) S 2", "garbage without parenthesis"])
def test_unreadable_stat_is_none(tmp_path: Path, stat: str) -> None:
    d = tmp_path / "37"
    d.mkdir()
    (d / "comm").write_text("ksmd\n")
    (d / "stat").write_text(stat)
    assert ksmd_cpu_seconds(tmp_path) is None


def test_missing_procfs_is_none(tmp_path: Path) -> None:
    assert ksmd_cpu_seconds(tmp_path / "nope") is None


@pytest.mark.skipif(not Path("/sys/kernel/mm/ksm/run").exists(), reason="no KSM here")
def test_this_machine_has_a_ksmd() -> None:
    seconds = ksmd_cpu_seconds(Path("/proc"))
    assert seconds is not None and seconds >= 0
