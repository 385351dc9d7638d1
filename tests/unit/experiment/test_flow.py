"""The wait for KSM to settle, by the daemon's settle rule or an idle ksmd."""

from __future__ import annotations

import io
from typing import Optional

from ksm_exporter.experiment.flow import Options, _Run
from ksm_exporter.experiment.readings import Reading
from ksm_exporter.experiment.reporter import Reporter
from ksm_exporter.readers.meminfo import MemInfo


class FakeSettings:
    def read(self, name: str) -> str:
        assert name == "sleep_millisecs"
        return "20"


Look = tuple[float, int, int, Optional[int]]  # typing.Optional: evaluated at runtime (3.9)


def wait_on(looks: list[Look], k: int = 2, run_file: int = 1) -> tuple[float | None, str]:
    """_Run.wait_settled over (seconds since KSM start, full_scans, pages_sharing,
    pages_scanned) readings with `run` at run_file; returns what it returned and what it printed."""
    out = io.StringIO()
    opts = Options(workload=None, settle_scans=k, interval=0.0, timeout=100.0)
    run = _Run(opts, Reporter(out), FakeSettings())  # type: ignore[arg-type]
    readings = iter(
        Reading(
            at, run_file, scans, sharing, sharing // 2, None, scanned, MemInfo(2**30, 2**29), None
        )
        for at, scans, sharing, scanned in looks
    )
    run.read = lambda: next(readings)  # type: ignore[method-assign]
    return run.wait_settled(next(readings)), out.getvalue()


def test_the_wait_uses_the_daemons_settle_rule() -> None:
    """pages_sharing back at its value of K scans ago is not enough: it moved in between
    (settle.SettleTracker's window), so the wait goes on until the window is flat."""
    looks = [(t, t, 2000 if t == 1 else 1000, 100 * t) for t in range(6)]
    seconds, out = wait_on(looks, k=2)
    assert seconds == 4.0
    assert "settled: pages_sharing 1000 after 4 full scans, 4.0s" in out


def test_the_wait_ends_when_ksmd_is_idle() -> None:
    """No memory marked mergeable: full_scans stops, and so does pages_scanned."""
    seconds, out = wait_on([(t / 2, 7, 0, 500) for t in range(10)], k=2)
    assert seconds == 2.0  # idle_after(20 ms) is 2 s
    assert "settled: ksmd is idle after 2.0s" in out


def test_the_offline_bit_in_run_is_not_ksm_switched_off() -> None:
    """While memory is hot-removed the kernel reads back run=5 (KSM_RUN_OFFLINE): KSM
    still runs, as the settle rule and `watch` see it."""
    seconds, out = wait_on([(t, t, 1000, 100 * t) for t in range(4)], k=2, run_file=5)
    assert seconds == 2.0
    assert "settled: pages_sharing 1000 after 2 full scans, 2.0s" in out
