"""The machine-wide KSM lock of the experiment and the real-KSM tests."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from ksm_exporter.experiment import ksm_settings
from ksm_exporter.experiment.ksm_settings import exclusive_ksm
from tests.support import copy_fixture


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
