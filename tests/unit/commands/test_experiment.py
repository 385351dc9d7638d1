"""`experiment` as a command: the rights it checks, the plan and confirmation, and the
refusals that come before the root check (whole runs as root on a fixture sysfs:
tests/system/test_experiment_fixture.py)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from ksm_exporter.commands.experiment import check_rights, confirm, plan
from ksm_exporter.experiment.flow import Options
from ksm_exporter.experiment.plot import INSTALL_HINT
from ksm_exporter.experiment.workload import (
    WorkloadSpec,
)
from tests.support import REPO, copy_fixture
from tests.support.experiment import run_command


@pytest.mark.parametrize(
    ("answer", "ok"), [("y\n", True), ("YES\n", True), ("\n", False), ("", False)]
)
def test_confirmation_needs_yes(answer: str, ok: bool) -> None:
    err = io.StringIO()
    assert confirm("plan", io.StringIO(answer), err) is ok
    assert err.getvalue().endswith("Continue? [y/N] ")


def test_the_plan_names_the_speed_settings_given_and_only_those() -> None:
    text = plan(Options(WorkloadSpec(4, 256 << 20), sleep_millisecs=10), 3 << 20)
    assert "unmerge every merged page (3 MB more in use)" in text
    assert "start 4 workload processes (4x256M, 75% identical across the processes)" in text
    assert "  - start KSM with sleep_millisecs=10 and wait until it settles" in text
    assert "  - start KSM and wait" in plan(Options(None), 0)


def test_not_root_is_refused_in_one_line(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    why = check_rights(root / "sys", euid=1000)
    assert why is not None and "root" in why and "\n" not in why
    assert check_rights(root / "sys", euid=0) is None


def test_no_ksm_is_refused_in_one_line(tmp_path: Path) -> None:
    root = copy_fixture("no-ksm", tmp_path)
    why = check_rights(root / "sys", euid=0)
    assert why is not None and "does not exist" in why


def test_plot_without_matplotlib_says_how_to_get_it_before_anything_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "block" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    path = os.pathsep.join([str(blocker.parent), str(REPO), os.environ.get("PYTHONPATH", "")])
    done = run_command(
        "--no-workload", "--yes", f"--plot={tmp_path}/p.png", env={"PYTHONPATH": path}
    )
    assert done.returncode == 1
    assert done.stderr == f"ksm-exporter experiment: {INSTALL_HINT}\n"
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--workload=4x32M", "--no-workload"],
        ["--workload=lots"],
        ["--no-workload", "--duplicate=2"],
        ["--no-workload", "--timeout=0s"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str]) -> None:
    done = run_command(*args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "error:" in done.stderr
