"""ksmtuned's inputs at an edge, read within a bounded time.

Those reads (the process table, the rss or PSS of each qemu) can hang on a guest whose
memory map is locked. Whoever observes edges must keep polling: the watcher thread of the
daemon, and `ksm-exporter watch --explain`. So the reads run in a thread of their own,
waited for EXPLAIN_SECONDS, and while one is still stuck no other is started (threads stay
bounded however many edges come)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from ksm_exporter.model.edge_cause import EdgeContext
from ksm_exporter.readers.edge_inputs import EdgeExplainer
from ksm_exporter.readers.meminfo import MemInfo

log = logging.getLogger(__name__)

# How long an edge waits for ksmtuned's inputs: well under the time after which the
# watcher counts as stalled (the interval plus two seconds at least).
EXPLAIN_SECONDS = 1.5
THREAD_NAME = "ksm-edge-inputs"


class BoundedExplainer:
    """Calls `explain` in its own thread; None (cause unknown) when it fails, or does not
    answer in EXPLAIN_SECONDS, or an earlier call is still stuck."""

    def __init__(self, explain: EdgeExplainer) -> None:
        self.explain = explain
        self._latest: Future[EdgeContext] | None = None

    def __call__(self, run: int, memory: MemInfo | None) -> EdgeContext | None:
        if self._latest is not None and not self._latest.done():
            return None  # said when it got stuck
        future: Future[EdgeContext] = Future()

        def read() -> None:
            try:
                future.set_result(self.explain(run, memory))
            except BaseException as e:
                future.set_exception(e)

        self._latest = future
        threading.Thread(target=read, name=THREAD_NAME, daemon=True).start()
        try:
            return future.result(timeout=EXPLAIN_SECONDS)
        except FutureTimeout:
            log.warning(
                "reading ksmtuned's inputs at the edge took over %.1fs (a hung /proc read?); "
                "the edge's cause is unknown, as the next ones' until it returns",
                EXPLAIN_SECONDS,
            )
        except Exception:  # the edge stands all the same, its cause unknown
            log.exception("reading who made the edge failed")
        return None
