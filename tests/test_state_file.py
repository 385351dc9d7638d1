from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from ksm_exporter.model.derived import RunState
from ksm_exporter.state.state_file import StateFile
from ksm_exporter.state.transitions import TransitionTracker

from .support import REPO, copy_fixture, run_exporter, wait_until, write_ksm


def _history(n: int) -> TransitionTracker:
    tracker = TransitionTracker(max_history=100)
    for i in range(n + 1):
        tracker.observe(i % 2, None, float(i))
    return tracker


def test_round_trip(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state")
    history = _history(5).state().history
    assert sf.save(history)
    assert sf.load() == list(history)
    assert sf.errors == 0


def test_corrupt_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state")
    sf.save(_history(3).state().history)
    with open(sf.path, "a") as f:
        f.write('{"timestamp": 9, "to": "runn\n')
        f.write("not json\n")
        f.write('"a JSON string"\n')
    loaded = sf.load()
    assert [t.to_state for t in loaded] == [RunState.RUNNING, RunState.STOPPED, RunState.RUNNING]
    assert sf.errors == 3


def test_unwritable_location_keeps_going_and_counts(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "missing-dir" / "state")
    assert not sf.save(_history(2).state().history)
    assert sf.errors == 1


# A writer that saves transition after transition and says "logged N" only after each
# save returned: the exporter's order (save, then log).
WRITER = """
import sys
from pathlib import Path
from ksm_exporter.state.state_file import StateFile
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


def test_history_survives_sigterm_and_restart_of_the_exporter(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    state = tmp_path / "state.jsonl"
    with run_exporter(root, f"--state.file={state}", tmp=tmp_path) as exporter:
        for run in (1, 0, 1, 2, 0):
            write_ksm(root, "run", run)
            wait_until(lambda r=run: exporter.metrics().get("ksm_run") == r, what=f"run={run} seen")
            time.sleep(0.25)  # let the watcher see it too, not just the scrape
        _, body = exporter.get("/transitions")
        before = json.loads(body)
        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(5) == 0
    assert [t["to"] for t in before] == ["running", "stopped", "running", "unmerging", "stopped"]
    # The fixture's /proc has no pid 1 (as if hidden): no telling who started or stopped
    # KSM; ksmtuned never unmerges. The causes come back from the file below.
    assert [t["cause"] for t in before] == ["unknown", "unknown", "unknown", "other", "unknown"]
    with run_exporter(root, f"--state.file={state}", tmp=tmp_path) as exporter:
        _, body = exporter.get("/transitions")
        assert json.loads(body) == before
        m = exporter.metrics()
        # The latest edge into each state is restored; counters restart at zero.
        assert (
            m['ksm_last_transition_timestamp_seconds{state="stopped"}'] == before[-1]["timestamp"]
        )
        assert m['ksm_run_transitions_total{cause="unknown",state="running"}'] == 0
