"""`ksm-exporter experiment` on the real kernel: merging, restore, interrupt, JSON, plot.

The command takes the machine-wide KSM lock itself, and flock is per open file
description: a test holding the lock while the command waits for it would deadlock. So
these tests run the command as a process without holding the lock, and compare the
settings "at rest" (read under the lock, when no experiment or test has them changed)
before and after.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ksm_exporter.experiment.ksm_settings import RESTORABLE, exclusive_ksm
from ksm_exporter.experiment.workload import parse_workload
from tests.support import REAL_KSM, REPO, exporter_command, wait_until
from tests.support.experiment import JSON_KEYS, check_png

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(
        os.geteuid() != 0 or not os.access(REAL_KSM / "run", os.W_OK),
        reason="needs root and a writable /sys/kernel/mm/ksm",
    ),
]

FAST = ["--pages-to-scan=10000", "--sleep-millisecs=10", "--interval=100ms", "--timeout=40s"]


def settings_at_rest() -> dict[str, str]:
    """Every restorable KSM setting, read while holding the lock (nothing written)."""
    with exclusive_ksm("/sys") as settings:
        return {n: settings.read(n) for n in RESTORABLE if (REAL_KSM / n).exists()}


def workload_pids(text: str) -> list[int]:
    m = re.search(r"^  pids ([\d ]+)$", text, re.MULTILINE)
    assert m, f"no workload pids in:\n{text}"
    return [int(p) for p in m.group(1).split()]


def gone(pid: int) -> bool:
    """Not running any more (a reused pid would not be our workload module)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return True
    return b"ksm_exporter.experiment.workload" not in cmdline


def test_saves_the_identical_part_and_restores_everything(tmp_path: Path) -> None:
    """4x32M with 0.75 identical: 24 MiB of each process is the same page for page, so KSM
    keeps one copy and saves the other three: 72 MiB, within 15%."""
    before = settings_at_rest()
    plot = tmp_path / "ksm.png"
    done = subprocess.run(
        exporter_command(
            "experiment", "--workload=4x32M", "--duplicate=0.75", "--yes", "--json",
            f"--plot={plot}", *FAST,
        ),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"disabled", "enabled"}
    assert set(out["disabled"]) == set(out["enabled"]) == JSON_KEYS

    expected_mb = parse_workload("4x32M", 0.75).expected_saved_bytes / 2**20
    assert expected_mb == 72
    enabled, disabled = out["enabled"], out["disabled"]
    assert abs(enabled["saved_mb"] - expected_mb) <= 0.15 * expected_mb, enabled
    assert disabled["saved_mb"] == 0  # step 2 unmerged everything
    assert enabled["sharing_rate"] == pytest.approx(3, rel=0.15)  # 4 copies -> 1 + 3
    assert enabled["settle_seconds"] is not None and enabled["settle_seconds"] > 0
    assert enabled["full_scans"] >= 1
    assert enabled["ksmd_cpu_seconds"] is not None and enabled["ksmd_cpu_seconds"] >= 0
    assert enabled["general_profit_bytes"] > 0

    for step in range(0, 9):
        assert f"step {step}/8:" in done.stderr
    assert all(gone(pid) for pid in workload_pids(done.stderr))
    check_png(plot)
    assert settings_at_rest() == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_while_waiting_ends_the_workload_and_restores(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C (or kill) during step 5: scanning 100 pages every 100 ms, KSM cannot settle on 32768
    pages for minutes, so the signal always lands in the wait."""
    before = settings_at_rest()
    log = tmp_path / "out.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            exporter_command(
                "experiment", "--workload=4x32M", "--yes", "--no-drop-caches",
                "--pages-to-scan=100", "--sleep-millisecs=100", "--timeout=5m",
            ),
            stdout=f,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )  # fmt: skip
    try:
        # The lock may be held by another test run for a while: wait generously.
        wait_until(lambda: "full scans" in log.read_text(), timeout=90, what="step 5")
        pids = workload_pids(log.read_text())
        assert not any(gone(pid) for pid in pids)
        time.sleep(0.5)
        proc.send_signal(sig)
        assert proc.wait(30) == 128 + sig
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert f"interrupted by {sig.name}: workload ended, KSM settings restored" in text
    assert "step 6/8" not in text
    assert "Traceback" not in text
    wait_until(lambda: all(gone(pid) for pid in pids), timeout=5, what="the workload to end")
    assert settings_at_rest() == before


def test_no_workload_measures_what_runs() -> None:
    """Nothing of ours runs: the flow still goes through all steps and puts things back."""
    before = settings_at_rest()
    done = subprocess.run(
        exporter_command("experiment", "--no-workload", "--yes", "--no-drop-caches", *FAST),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "step 0/8" not in done.stdout
    assert "step 7/8: run the PRNG in the VMs: skipped (--no-workload)" in done.stdout
    table = done.stdout[done.stdout.index("Matrix 1") :]
    assert "KSM disabled" in table and "KSM enabled" in table and "Settle (s)" in table
    assert settings_at_rest() == before
