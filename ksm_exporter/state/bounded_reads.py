"""Reads of /proc that can hang, run in a thread of their own and waited for a bounded
time.

A read of a process's /proc files (cmdline, statm, smaps_rollup...) can hang on a guest
whose memory map is locked, as `ps` does. Whoever must go on meanwhile runs it here: the
watcher at an edge (ksmtuned's inputs; it must keep polling), `ksm-exporter watch
--explain` (it must keep printing), `ksm-exporter status` (it must answer). The thread is a
daemon thread, so one stuck for good never keeps the process from exiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from ksm_exporter.model.edge_cause import EdgeContext
from ksm_exporter.readers.edge_inputs import EdgeExplainer
from ksm_exporter.readers.meminfo import MemInfo

log = logging.getLogger(__name__)

# How long an edge waits for ksmtuned's inputs: well under the time after which the
# watcher counts as stalled (the interval plus two seconds at least).
EXPLAIN_SECONDS = 1.5
THREAD_NAME = "ksm-edge-inputs"

T = TypeVar("T")


def in_thread(read: Callable[[], T], name: str) -> Future[T]:
    """`read()` started in a daemon thread of its own; its result (or error) in the future."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(read())
        except BaseException as e:  # handed to whoever waits
            future.set_exception(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


class BoundedExplainer:
    """Calls `explain` in its own thread; None (cause unknown) when it fails, or does not
    answer in EXPLAIN_SECONDS, or an earlier call is still stuck."""

    def __init__(self, explain: EdgeExplainer) -> None:
        self.explain = explain
        self._latest: Future[EdgeContext] | None = None

    def __call__(self, run: int, memory: MemInfo | None) -> EdgeContext | None:
        if self._latest is not None and not self._latest.done():
            return None  # said when it got stuck
        self._latest = in_thread(lambda: self.explain(run, memory), THREAD_NAME)
        try:
            return self._latest.result(timeout=EXPLAIN_SECONDS)
        except FutureTimeout:
            log.warning(
                "reading ksmtuned's inputs at the edge took over %.1fs (a hung /proc read?); "
                "the edge's cause is unknown, as the next ones' until it returns",
                EXPLAIN_SECONDS,
            )
        except Exception:  # the edge stands all the same, its cause unknown
            log.exception("reading who made the edge failed")
        return None
