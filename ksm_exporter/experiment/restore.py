"""Putting the node back after a run: every KSM setting the run wrote, then the services
it stopped, with stop signals held so that a Ctrl-C cannot leave them half restored."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from ksm_exporter.experiment.ksm_settings import KsmSettings
from ksm_exporter.experiment.reporter import Reporter
from ksm_exporter.experiment.services import KsmServices

# Ctrl-C, kill, and a closed terminal: each ends the run through the cleanup.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold back stop signals while cleaning up: a Ctrl-C there would leave settings
    half restored. One that arrives is delivered afterwards."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def describe_settings(values: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items()) or "none"


def put_back(settings: KsmSettings, services: KsmServices, rep: Reporter) -> list[str]:
    """Restore KSM settings, then the services (ksm.service writes run itself); return a
    message per failure."""
    restored = describe_settings(settings.saved)
    failures = settings.restore() + services.restore()
    rep.end_progress()
    rep.info(f"restored: {restored}")
    for failure in failures:
        rep.info(f"error: {failure}")
    return failures
