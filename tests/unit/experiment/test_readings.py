"""The experiment's readings: the status line and ksmd's CPU time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ksm_exporter.experiment.readings import Reading, ksmd_cpu_seconds, status_line
from ksm_exporter.readers.meminfo import MemInfo
from tests.support import REAL_KSM, copy_fixture


def test_status_line_prints_sharing_rate_as_the_table_and_the_script_do() -> None:
    """awk's conversion: an integral rate prints whole however large, others %.6g."""
    for sharing, shared, rate in ((2_000_000, 1, "2000000"), (10, 3, "3.33333")):
        r = Reading(0.0, 1, 5, sharing, shared, None, None, MemInfo(2**30, 2**29), None)
        assert f"Sharing_Rate: {rate}, " in status_line(r, 4096)


def test_ksmd_cpu_is_the_kernel_threads_not_a_namesakes(tmp_path: Path) -> None:
    """procfs-vms has a user process named ksmd (pid 20) before the kernel thread (37)."""
    proc = copy_fixture("procfs-vms", tmp_path) / "proc"
    assert ksmd_cpu_seconds(proc) == pytest.approx((1234 + 566) / os.sysconf("SC_CLK_TCK"))
    shutil.rmtree(proc / "37")
    assert ksmd_cpu_seconds(proc) is None


@pytest.mark.parametrize("stat", ["", "37 (ksmd) S 2", "garbage without parenthesis"])
def test_an_unreadable_ksmd_stat_is_no_ksmd_cpu(tmp_path: Path, stat: str) -> None:
    proc = copy_fixture("procfs-vms", tmp_path) / "proc"
    (proc / "37" / "stat").write_text(stat)
    assert ksmd_cpu_seconds(proc) is None


def test_a_missing_procfs_is_no_ksmd_cpu(tmp_path: Path) -> None:
    assert ksmd_cpu_seconds(tmp_path / "nope") is None


@pytest.mark.skipif(not REAL_KSM.exists(), reason="no KSM here")
def test_this_machine_has_a_ksmd() -> None:
    seconds = ksmd_cpu_seconds(Path("/proc"))
    assert seconds is not None and seconds >= 0
