"""Step 1's "service ksm stop": the ksm and ksmtuned units, where systemd runs them.

ksmtuned rewrites run, pages_to_scan and sleep_millisecs every minute, so a measurement
with it active measures ksmtuned. They are stopped only when asked (--stop-ksmtuned) and
started again afterwards; without systemd there is nothing to stop, and a ksmtuned
process found anyway is reported so that the operator can stop it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from ksm_exporter.readers.ksmtuned import KSMTUNED_NAME
from ksm_exporter.readers.processes import read_process_names

# ksmtuned first: it would start ksm again. Started again in the reverse order.
UNITS = ("ksmtuned", "ksm")

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)


def systemd_running(run_dir: Path = Path("/run/systemd/system")) -> bool:
    """sd_booted()'s test, plus a systemctl to talk to it."""
    return run_dir.is_dir() and shutil.which("systemctl") is not None


def ksmtuned_pids(procfs: Path) -> list[int]:
    """ksmtuned processes, whoever started them (it is a shell script named ksmtuned)."""
    names = read_process_names(procfs).names
    return sorted(pid for pid, name in names.items() if name == KSMTUNED_NAME)


class KsmServices:
    """Stops the active ones among UNITS and starts exactly those again."""

    def __init__(self, runner: Runner = _run, systemd: bool | None = None) -> None:
        self.runner = runner
        self.systemd = systemd_running() if systemd is None else systemd
        self.stopped: list[str] = []

    def active(self) -> list[str]:
        if not self.systemd:
            return []
        return [
            u
            for u in UNITS
            if self.runner(["systemctl", "is-active", "--quiet", u]).returncode == 0
        ]

    def stop(self) -> list[str]:
        """Stop the active units; return them. Raises RuntimeError when one will not stop."""
        for unit in self.active():
            # Remembered first: a stop cut short by a signal may have stopped the unit
            # already, and starting an active unit again does nothing.
            self.stopped.append(unit)
            done = self.runner(["systemctl", "stop", unit])
            if done.returncode != 0:
                raise RuntimeError(f"systemctl stop {unit} failed: {done.stderr.strip()}")
        return list(self.stopped)

    def restore(self) -> list[str]:
        """Start again what stop() stopped; return a message per unit that failed."""
        failures = []
        for unit in reversed(self.stopped):
            done = self.runner(["systemctl", "start", unit])
            if done.returncode != 0:
                failures.append(f"systemctl start {unit} failed: {done.stderr.strip()}")
        self.stopped.clear()
        return failures
