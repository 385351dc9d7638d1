from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ksm_exporter.experiment.ksm_settings import KsmSettings, KsmUnavailable, exclusive_ksm
from tests.support import REAL_KSM, NotifySocket


@pytest.fixture
def real_ksm() -> Iterator[KsmSettings]:
    """The machine's real KSM, held exclusively (a machine-wide lock) and with every setting
    the test writes restored afterwards, also on failure. Skips where KSM is absent or
    read-only."""
    try:
        with exclusive_ksm("/sys") as settings:
            yield settings
    except KsmUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    """A socket standing in for systemd's NOTIFY_SOCKET (its env(): a service's)."""
    s = NotifySocket(tmp_path / "notify")
    yield s
    s.close()


def pytest_report_header(config: pytest.Config) -> str:
    writable = REAL_KSM.joinpath("run").exists() and os.access(REAL_KSM / "run", os.W_OK)
    return f"real KSM: {'writable' if writable else 'absent or read-only'} ({REAL_KSM})"
