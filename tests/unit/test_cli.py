"""The entry point: status, watch and transitions (their --help, and the commands
themselves) never load prometheus_client, a collector or the daemon; a wrong command or
flag is one line."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ksm_exporter.state.state_file import StateFile
from ksm_exporter.state.transitions import TransitionTracker
from tests.support import FIXTURES, REPO, run_cli

# Runs the command as `ksm-exporter` would, then names on stderr, at exit, the heavy
# modules it loaded (also after SIGTERM: watch returns normally).
PROBE = """
import atexit, sys
def heavy():
    found = sorted(m for m in sys.modules if m.split(".")[0] == "prometheus_client"
                   or m.startswith(("ksm_exporter.daemon", "ksm_exporter.collectors")))
    sys.stderr.write("loaded: " + " ".join(found) + "\\n")
atexit.register(heavy)
from ksm_exporter.cli import main
sys.exit(main(sys.argv[1:]))
"""

LIGHT = f"--path.sysfs={FIXTURES}/linux-4.13/sys", f"--path.procfs={FIXTURES}/linux-4.13/proc"


def probe(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PROBE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def loaded(proc: subprocess.Popen[str], printed: bool = True) -> list[str]:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert bool(out) == printed, out
    last = err.splitlines()[-1]
    assert last.startswith("loaded:"), err
    return last.split()[1:]


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--help"),
        ("status", *LIGHT),
        ("status", "--json", *LIGHT),
        ("watch", "--help"),
        ("transitions", "--help"),
    ],
)
def test_light_commands_load_no_exporter_machinery(args: tuple[str, ...]) -> None:
    assert loaded(probe(*args)) == []


def test_transitions_from_a_state_file_loads_no_exporter_machinery(tmp_path: Path) -> None:
    tracker = TransitionTracker(max_history=10)
    for i in range(3):
        tracker.observe(i % 2, None, 1_700_000_000.0 + i)
    StateFile(tmp_path / "state").save(tracker.state().history)
    proc = probe("transitions", f"--state.file={tmp_path}/state")
    assert loaded(proc) == []


def test_watch_explain_loads_no_exporter_machinery() -> None:
    conf = f"--collector.ksmtuned.config={FIXTURES}/ksmtuned/stock.conf"
    proc = probe("watch", "--explain", conf, "--watch.interval=50ms", *LIGHT)  # run=1
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the first look has run, explanation included
    assert "KSM is running." in line and "cause: " in line, line
    proc.send_signal(signal.SIGTERM)
    assert loaded(proc, printed=False) == []


def test_the_probe_sees_what_serve_loads() -> None:
    """Without this, a probe that never saw a module would pass the tests above."""
    found = loaded(probe("--help"))
    assert "prometheus_client" in found and "ksm_exporter.collectors.registry" in found


def test_unknown_command_is_one_line() -> None:
    r = run_cli("stauts")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (
        "ksm-exporter: error: unknown command 'stauts' (commands: status, watch, transitions, "
        "experiment) (see --help)\n"
    )


@pytest.mark.parametrize(
    "args", [("status",), ("watch",), ("transitions",), ("experiment", "--no-workload")]
)
def test_each_command_takes_its_own_flags_only(args: tuple[str, ...]) -> None:
    r = run_cli(*args, "--web.listen-address=:1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (
        f"ksm-exporter {args[0]}: error: unrecognized arguments: --web.listen-address=:1 "
        "(see --help)\n"
    )
