"""The ksm and ksmtuned services the experiment stops and starts again, and ksmtuned
found by name."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ksm_exporter.experiment.services import KsmServices, ksmtuned_pids


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
