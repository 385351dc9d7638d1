"""Faults the exporter must ride out: meminfo vanishing, a port in use, --state.file on a
read-only or full disk, its writer killed at any moment (the KSM directory vanishing:
tests/unit/daemon/web/test_app.py)."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ksm_exporter.state.state_file import StateFile
from tests.support import (
    REPO,
    RunningExporter,
    copy_fixture,
    run_cli,
    run_exporter,
    wait_until,
    write_ksm,
)


def metric(exp: RunningExporter, key: str) -> float | None:
    return exp.metrics().get(key)


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli(
            f"--web.listen-address=127.0.0.1:{port}",
            f"--path.sysfs={root}/sys",
            f"--path.procfs={root}/proc",
        )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in proc.stderr


def test_meminfo_vanishing_is_counted_and_survived(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    meminfo = root / "proc/meminfo"
    key = 'ksm_exporter_read_errors_total{file="meminfo"}'
    with run_exporter(root, tmp=tmp_path) as exp:
        assert metric(exp, key) is None
        meminfo.rename(root / "proc/meminfo.away")
        first = metric(exp, key)
        assert first is not None and first >= 1
        assert metric(exp, "ksm_pages_sharing") == 3000  # KSM itself is still read
        write_ksm(root, "run", 1)  # an edge without memory figures is still recorded
        wait_until(
            lambda: metric(exp, 'ksm_run_transitions_total{cause="unknown",state="running"}') == 1
        )
        (root / "proc/meminfo.away").rename(meminfo)
        count = metric(exp, key)
        assert metric(exp, key) == count  # readable again: no longer counted
        wait_until(lambda: "meminfo readable again" in exp.log(), what="the recovery logged")


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> None:
    """Write until the filesystem is full."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@needs_root
@pytest.mark.parametrize("disk", ["read-only", "full"])
def test_state_file_on_a_broken_disk_keeps_serving_and_counts(tmp_path: Path, disk: str) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    options = "ro,size=1m" if disk == "read-only" else "size=64k"
    with tmpfs(tmp_path / "state", options) as state_dir:
        if disk == "full":
            fill(state_dir)
        key = "ksm_exporter_state_file_errors_total"
        with run_exporter(root, f"--state.file={state_dir}/history", tmp=tmp_path) as exp:
            assert metric(exp, key) == 0
            for n, run in enumerate((1, 0, 1), 1):
                write_ksm(root, "run", run)
                wait_until(lambda n=n: (metric(exp, key) or 0) >= n, what=f"{n} failed saves")
            assert exp.get("/metrics")[0] == 200
            status, body = exp.get("/transitions")
            assert status == 200 and body.count('"to"') == 3  # kept in memory
            assert "cannot save state file" in exp.log()
            assert exp.proc.poll() is None


# A writer that saves transition after transition and says "logged N" only after each
# save returned: the exporter's order (save, then log).
WRITER = """
import sys
from pathlib import Path
from ksm_exporter.state.state_file import READ_LIMIT_BYTES, StateFile
from ksm_exporter.state.transitions import TransitionTracker
sf = StateFile(Path(sys.argv[1]))
tracker = TransitionTracker(max_history=100, restored=sf.load())
start = int(sys.argv[2])
i = 0
tracker.observe(0, None, 0.0)
while True:
    i += 1
    if tracker.observe(i % 2, None, float(start * 1000 + i)):
        sf.save(tracker.state().history)
        print(f"logged {start * 1000 + i}", flush=True)
"""


def test_sigkill_at_any_moment_never_loses_or_corrupts_a_logged_entry(tmp_path: Path) -> None:
    path = tmp_path / "state"
    rng = random.Random(1234)
    logged: list[float] = []
    for attempt in range(1, 16):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(attempt)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # it is writing: now kill it somewhere in its loop
        time.sleep(rng.uniform(0, 0.05))
        proc.kill()
        rest = proc.stdout.read()
        proc.wait()
        logged += [float(line.split()[1]) for line in (first + rest).splitlines()]
        sf = StateFile(path)
        history = [t.timestamp for t in sf.load()]
        assert sf.errors == 0, "the state file was corrupted by SIGKILL"
        assert history == sorted(history) and len(history) == len(set(history))
        # Everything logged that still fits in the bounded history is there.
        missing = [ts for ts in logged if ts >= history[0] and ts not in set(history)]
        assert not missing, f"logged but lost: {missing}"
        assert history[-1] >= logged[-1]
