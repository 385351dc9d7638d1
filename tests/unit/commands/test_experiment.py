"""`experiment` without the real kernel: workload shapes, matrices, the settle wait, ksmd
CPU, plot, services, checks, and the whole flow on a fixture sysfs (errors and --timeout
restore what was written)."""

from __future__ import annotations

import fcntl
import io
import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import psutil
import pytest

from ksm_exporter.commands.experiment import check_rights, confirm, plan
from ksm_exporter.experiment import ksm_settings
from ksm_exporter.experiment.flow import (
    Options,
    Reading,
    Reporter,
    _Run,
    ksmd_cpu_seconds,
    status_line,
)
from ksm_exporter.experiment.ksm_settings import exclusive_ksm
from ksm_exporter.experiment.matrix import KEYS, Matrix, matrices_json, matrices_table
from ksm_exporter.experiment.mergeable import PAGE_SIZE, MergeableMemory
from ksm_exporter.experiment.plot import INSTALL_HINT, PlotUnavailable, Point, require_matplotlib
from ksm_exporter.experiment.services import KsmServices, ksmtuned_pids
from ksm_exporter.experiment.workload import (
    Workload,
    WorkloadError,
    WorkloadSpec,
    format_size,
    parse_size,
    parse_workload,
)
from ksm_exporter.readers.meminfo import MemInfo
from tests.support import REAL_KSM, REPO, copy_fixture, exporter_command
from tests.support.experiment import JSON_KEYS, check_png


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


def test_per_page_memory_equals_across_instances_and_differs_within() -> None:
    a = MergeableMemory(8, 6, pattern=b"salt", per_page=True)
    b = MergeableMemory(8, 6, pattern=b"salt", per_page=True)
    with a, b:

        def page(m: MergeableMemory, i: int) -> bytes:
            return m.map[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]

        identical = [page(a, i) for i in range(6)]
        assert identical == [page(b, i) for i in range(6)]
        assert len(set(identical)) == 6  # one distinct content per page index
        assert page(a, 6) != page(b, 6) and page(a, 7) != page(b, 7)  # the random part
        before = page(a, 7)
        a.randomize()
        assert page(a, 7) != before and page(a, 0) == identical[0]


def test_plain_mergeable_memory_keeps_one_pattern_for_every_identical_page() -> None:
    with MergeableMemory(4, 3) as m:
        pages = {m.map[i * PAGE_SIZE : (i + 1) * PAGE_SIZE] for i in range(3)}
        assert len(pages) == 1
        assert isinstance(m.map, mmap.mmap)


# --- matrices -----------------------------------------------------------------------

DISABLED = Matrix(8783, 23273, 0, 0.0, 0, 0, None, 0.0)
ENABLED = Matrix(6959, 25097, 1824, 3.5, 1900000000, 14, 62.5, 12.34)


def test_json_has_exactly_the_documented_keys() -> None:
    out = matrices_json(DISABLED, ENABLED)
    assert set(out) == {"disabled", "enabled"}
    assert set(out["disabled"]) == set(out["enabled"]) == JSON_KEYS == set(KEYS)
    assert out["enabled"]["settle_seconds"] == 62.5
    assert out["disabled"]["settle_seconds"] is None
    assert json.loads(json.dumps(out)) == out


def test_table_rows_are_aligned_and_use_the_seed_spellings() -> None:
    lines = matrices_table(DISABLED, ENABLED).splitlines()
    assert "KSM disabled" in lines[1] and "KSM enabled" in lines[1]
    assert set(lines[2]) == {"-"}
    body = {line[:24].strip(): line[24:].split() for line in lines[3:]}
    assert body["Mem used (MB)"] == ["8783", "6959"]
    assert body["Mem free (MB)"] == ["23273", "25097"]
    assert body["KSM saved (MB)"] == ["0", "1824"]
    assert body["Sharing_Rate"] == ["0", "3.5"]
    assert body["Settle (s)"] == ["-", "62.50"]
    assert body["ksmd CPU (s)"] == ["0.00", "12.34"]
    # Right-aligned: every number of a column ends in the same place.
    assert len({len(line) for line in lines if not line.startswith("-")}) == 1


def test_missing_values_print_as_dash() -> None:
    old = Matrix(100, 200, 5, 2.0, None, 3, None, None)  # a kernel before 6.1, no ksmd
    rows = {line[:24].strip(): line[24:].split() for line in matrices_table(old, old).splitlines()}
    assert rows["General_Profit (bytes)"] == rows["ksmd CPU (s)"] == ["-", "-"]
    assert matrices_json(old, old)["enabled"]["general_profit_bytes"] is None


# --- progress and confirmation --------------------------------------------------------


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_prints_sharing_rate_as_the_table_and_the_script_do() -> None:
    """awk's conversion: an integral rate prints whole however large, others %.6g."""
    for sharing, shared, rate in ((2_000_000, 1, "2000000"), (10, 3, "3.33333")):
        r = Reading(0.0, 1, 5, sharing, shared, None, None, MemInfo(2**30, 2**29), None)
        assert f"Sharing_Rate: {rate}, " in status_line(r, 4096)


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    out = FakeTty()
    rep = Reporter(out)
    rep.progress(10, 1, 0.5)
    rep.progress(20, 2, 1.0)
    rep.step(6, "next")
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 2
    assert text.endswith("full scans 2  elapsed 1.0s\nstep 6/8: next\n")


def test_progress_into_a_pipe_is_a_line_every_few_seconds() -> None:
    out = io.StringIO()
    rep = Reporter(out)
    for i in range(50):
        rep.progress(i, 0, i / 10)
    assert out.getvalue().count("\n") == 1
    assert "\r" not in out.getvalue()


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


# --- waiting for KSM to settle ------------------------------------------------------


class FakeSettings:
    def read(self, name: str) -> str:
        assert name == "sleep_millisecs"
        return "20"


Look = tuple[float, int, int, Optional[int]]


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


# --- ksmd CPU -------------------------------------------------------------------------


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


# --- plot ---------------------------------------------------------------------------


def test_plot_is_a_valid_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from ksm_exporter.experiment.plot import write_plot

    points = [
        Point(t / 2, min(t, 6) * 3000, min(t, 6) * 3000 * PAGE_SIZE / 2**20) for t in range(20)
    ]
    path = tmp_path / "ksm.png"
    write_plot(points, path, "test", marks=[(3.0, "settled"), (3.2, "PRNG")])
    assert check_png(path) == (800, 550)


def test_without_matplotlib_the_plot_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(PlotUnavailable) as e:
        require_matplotlib()
    assert str(e.value) == INSTALL_HINT
    assert "pip install 'ksm-exporter[plot]'" in INSTALL_HINT


# --- services -----------------------------------------------------------------------


class FakeSystemctl:
    def __init__(self, active: set[str], fail_start: bool = False) -> None:
        self.active = set(active)
        self.calls: list[list[str]] = []
        self.fail_start = fail_start

    def __call__(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(cmd))
        verb, unit = cmd[1], cmd[-1]
        rc = 0
        if verb == "is-active":
            rc = 0 if unit in self.active else 3
        elif verb == "stop":
            self.active.discard(unit)
        elif verb == "start":
            rc = 1 if self.fail_start else 0
            if not rc:
                self.active.add(unit)
        return subprocess.CompletedProcess(cmd, rc, "", "boom" if rc else "")


def test_stops_only_active_units_and_starts_them_again_in_reverse() -> None:
    fake = FakeSystemctl({"ksmtuned", "ksm"})
    services = KsmServices(runner=fake, systemd=True)
    assert services.stop() == ["ksmtuned", "ksm"]
    assert fake.active == set()
    assert services.restore() == []
    assert fake.active == {"ksmtuned", "ksm"}
    starts = [c[-1] for c in fake.calls if c[1] == "start"]
    assert starts == ["ksm", "ksmtuned"]


def test_inactive_units_are_not_touched() -> None:
    fake = FakeSystemctl({"ksm"})
    services = KsmServices(runner=fake, systemd=True)
    assert services.stop() == ["ksm"]
    services.restore()
    assert not any(c[1] in ("stop", "start") and c[-1] == "ksmtuned" for c in fake.calls)


def test_a_unit_that_does_not_start_again_is_reported() -> None:
    fake = FakeSystemctl({"ksmtuned"}, fail_start=True)
    services = KsmServices(runner=fake, systemd=True)
    services.stop()
    assert services.restore() == ["systemctl start ksmtuned failed: boom"]


def test_a_unit_whose_stop_is_cut_short_is_started_again() -> None:
    """Ctrl-C while `systemctl stop` runs: the unit may be stopped already, so it is
    started again all the same."""
    fake = FakeSystemctl({"ksmtuned", "ksm"})

    def interrupted_stop(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        done = fake(cmd)
        if cmd[1] == "stop":
            raise KeyboardInterrupt
        return done

    services = KsmServices(runner=interrupted_stop, systemd=True)
    with pytest.raises(KeyboardInterrupt):
        services.stop()
    assert services.restore() == []
    assert fake.active == {"ksmtuned", "ksm"}


def test_without_systemd_nothing_is_run() -> None:
    fake = FakeSystemctl({"ksmtuned"})
    services = KsmServices(runner=fake, systemd=False)
    assert services.active() == [] and services.stop() == [] and services.restore() == []
    assert fake.calls == []


def test_ksmtuned_processes_are_found_by_name(tmp_path: Path) -> None:
    for pid, comm in ((1, "init"), (40, "ksmtuned"), (41, "bash")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
    assert ksmtuned_pids(tmp_path) == [40]
    assert ksmtuned_pids(tmp_path / "missing") == []


# --- rights -------------------------------------------------------------------------


def test_not_root_is_refused_in_one_line(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    why = check_rights(root / "sys", euid=1000)
    assert why is not None and "root" in why and "\n" not in why
    assert check_rights(root / "sys", euid=0) is None


def test_no_ksm_is_refused_in_one_line(tmp_path: Path) -> None:
    root = copy_fixture("no-ksm", tmp_path)
    why = check_rights(root / "sys", euid=0)
    assert why is not None and "does not exist" in why


def test_a_held_lock_is_said_before_it_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    lock_path = tmp_path / "lock"
    monkeypatch.setattr(ksm_settings, "LOCK_PATH", lock_path)
    said: list[str] = []
    with open(lock_path, "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)

        def on_wait() -> None:
            said.append("busy")
            fcntl.flock(other, fcntl.LOCK_UN)  # the other run ends

        with exclusive_ksm(root / "sys", on_wait=on_wait):
            assert said == ["busy"]
    with exclusive_ksm(root / "sys", on_wait=on_wait):
        assert said == ["busy"]  # free: nothing said


# --- the command as a process (nothing of the real KSM is written) -----------------------


def run_command(*args: str, env: dict[str, str] | None = None, timeout: float = 60):  # type: ignore[no-untyped-def]
    return subprocess.run(
        exporter_command("experiment", *args),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def fixture_env(tmp_path: Path) -> dict[str, str]:
    # A fixture tree needs no machine-wide lock: tests on fixtures never wait for the real one.
    return {"KSM_EXPORTER_LOCK": str(tmp_path / "lock")}


def test_without_a_terminal_and_without_yes_it_refuses(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    before = (root / "sys/kernel/mm/ksm/run").read_text()
    done = run_command("--no-workload", f"--path.sysfs={root}/sys", env=fixture_env(tmp_path))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "--yes" in done.stderr
    assert done.stdout == ""
    assert (root / "sys/kernel/mm/ksm/run").read_text() == before


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


# The test venv's interpreter may live under /root, out of another user's reach; the
# system one runs the command as well (the experiment imports nothing outside the stdlib).
SYSTEM_PYTHON = Path("/usr/bin/python3")


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


# --- workload processes ---------------------------------------------------------------


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
