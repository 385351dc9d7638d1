"""`experiment` as root on a fixture sysfs (nothing of the real KSM is written): the
refusals that come after the root check, and whole runs whose --timeout or error midway
restore what was written. It runs only as root, so these are not unit tests."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ksm_exporter.experiment.mergeable import PAGE_SIZE
from tests.support import REPO, copy_fixture
from tests.support.experiment import JSON_KEYS, fixture_env, run_command

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="experiment runs only as root")

# The test venv's interpreter may live under /root, out of another user's reach; the
# system one runs the command as well (the experiment imports nothing outside the stdlib).
SYSTEM_PYTHON = Path("/usr/bin/python3")


def test_without_a_terminal_and_without_yes_it_refuses(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    before = (root / "sys/kernel/mm/ksm/run").read_text()
    done = run_command("--no-workload", f"--path.sysfs={root}/sys", env=fixture_env(tmp_path))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "--yes" in done.stderr
    assert done.stdout == ""
    assert (root / "sys/kernel/mm/ksm/run").read_text() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no /usr/bin/python3")
def test_as_another_user_it_says_root_only_in_one_line() -> None:
    done = subprocess.run(
        [str(SYSTEM_PYTHON), "-m", "ksm_exporter", "experiment", "--no-workload", "--yes"],
        capture_output=True,
        text=True,
        cwd=REPO,
        user=65534,
        group=65534,
        extra_groups=[],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "ksm-exporter experiment: must be run as root "
        "(it writes /sys/kernel/mm/ksm and /proc/sys/vm/drop_caches)\n"
    )


def test_a_workload_larger_than_memory_is_refused(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    done = run_command(
        "--workload=2x64T", "--yes", f"--path.sysfs={root}/sys", env=fixture_env(tmp_path)
    )
    assert done.returncode == 1
    assert "not enough memory" in done.stderr and done.stderr.count("\n") == 1


def ksm_file(root: Path, name: str) -> str:
    return (root / "sys/kernel/mm/ksm" / name).read_text()


def test_timeout_measures_anyway_and_restores(tmp_path: Path) -> None:
    """A fixture's full_scans never moves: the wait ends at --timeout, settle_seconds is
    null, and every file written is back."""
    root = copy_fixture("linux-6.18", tmp_path)
    before = {n: ksm_file(root, n) for n in ("run", "pages_to_scan", "sleep_millisecs")}
    done = run_command(
        "--no-workload",
        "--yes",
        "--json",
        "--no-drop-caches",
        "--timeout=1s",
        "--interval=100ms",
        "--pages-to-scan=5000",
        "--sleep-millisecs=5",
        f"--path.sysfs={root}/sys",
        env=fixture_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"disabled", "enabled"}
    assert set(out["enabled"]) == set(out["disabled"]) == JSON_KEYS
    assert out["enabled"]["settle_seconds"] is None
    assert out["enabled"]["saved_mb"] == 3000 * PAGE_SIZE // 2**20
    assert "not settled within --timeout 1s" in done.stderr
    for step in range(1, 9):
        assert f"step {step}/8:" in done.stderr
    assert "restored: run=0 pages_to_scan=100 sleep_millisecs=20" in done.stderr
    assert {n: ksm_file(root, n) for n in before} == before


def test_an_error_midway_restores_what_was_written(tmp_path: Path) -> None:
    """sleep_millisecs cannot be written (a directory here): the run stops at step 5 with
    one line, and `run`, already written three times, is back to its value."""
    root = copy_fixture("linux-6.18", tmp_path)
    (root / "sys/kernel/mm/ksm/run").write_text("1\n")
    sleep = root / "sys/kernel/mm/ksm/sleep_millisecs"
    sleep.unlink()
    sleep.mkdir()
    done = run_command(
        "--no-workload",
        "--yes",
        "--no-drop-caches",
        "--sleep-millisecs=5",
        f"--path.sysfs={root}/sys",
        env=fixture_env(tmp_path),
    )
    assert done.returncode == 1
    assert "step 5/8" in done.stdout and "step 6/8" not in done.stdout
    assert done.stderr.startswith("ksm-exporter experiment: cannot set sleep_millisecs=5")
    assert done.stderr.count("\n") == 1
    assert "restored: run=1" in done.stdout
    assert ksm_file(root, "run") == "1\n"
