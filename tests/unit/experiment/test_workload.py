"""The workload the experiment starts: size and shape parsing, and its processes (start,
the PRNG pass, stop)."""

from __future__ import annotations

import signal

import psutil
import pytest

from ksm_exporter.experiment.mergeable import PAGE_SIZE
from ksm_exporter.experiment.workload import (
    Workload,
    WorkloadError,
    WorkloadSpec,
    format_size,
    parse_size,
    parse_workload,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4096", 4096), ("32M", 32 << 20), ("1g", 1 << 30), ("512KiB", 512 << 10), ("2MB", 2 << 20)],
)
def test_sizes_are_binary_like_free_m(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "1.5G", "-1M", "10Q"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_workload_expected_saving_is_the_identical_part_of_n_minus_1_processes() -> None:
    spec = parse_workload("4x32M", duplicate=0.75)
    assert (spec.processes, spec.bytes_each) == (4, 32 << 20)
    assert spec.pages_each == (32 << 20) // PAGE_SIZE
    assert spec.identical_pages_each == spec.pages_each * 3 // 4
    assert spec.expected_saved_bytes == 3 * 24 << 20
    assert spec.describe() == "4x32M, 75% identical across the processes"
    assert format_size(spec.bytes_each) == "32M"


@pytest.mark.parametrize("text", ["4", "x32M", "0x32M", "4x0", "4x32Q"])
def test_bad_workloads_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_workload(text)


def test_duplicate_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError):
        WorkloadSpec(2, 1 << 20, 1.5)


def children(workload: Workload) -> set[int]:
    """The workload's processes still among ours, unreaped zombies included."""
    return {c.pid for c in psutil.Process().children()} & set(workload.pids)


def test_workload_processes_run_the_prng_and_end_on_stop() -> None:
    workload = Workload(WorkloadSpec(2, 1 << 20, 0.5))
    try:
        workload.start()
        assert len(workload.pids) == 2 and children(workload) == set(workload.pids)
        workload.prng_pass()
    finally:
        workload.stop()
    assert not children(workload)
    assert all(p.returncode == 0 for p in workload.procs)  # ended by stdin closing


def test_a_workload_process_that_dies_is_an_error_naming_it() -> None:
    workload = Workload(WorkloadSpec(2, 1 << 20, 0.5))
    try:
        workload.start()
        victim = workload.procs[1]
        victim.kill()
        victim.wait()
        with pytest.raises(
            WorkloadError, match=f"workload process {victim.pid} failed: killed by SIGKILL"
        ):
            workload.prng_pass()
    finally:
        workload.stop()
    assert not children(workload)


def test_stop_kills_a_process_that_does_not_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped process sees neither its stdin close nor SIGTERM: SIGKILL ends it, and
    it is reaped like the others."""
    monkeypatch.setattr(Workload, "EXIT_WAIT", 0.3)
    monkeypatch.setattr(Workload, "SIGNAL_WAIT", 0.3)
    workload = Workload(WorkloadSpec(2, 1 << 20, 0.5))
    try:
        workload.start()
        workload.procs[0].send_signal(signal.SIGSTOP)
    finally:
        workload.stop()
    assert not children(workload)
    assert workload.procs[0].returncode == -signal.SIGKILL
    assert workload.procs[1].returncode == 0
