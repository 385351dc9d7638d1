"""Scrapes with deadlines: each collector runs as its own task off the HTTP loop, on a
bounded set of threads (one per collector), and a scrape answers by its deadline with
whatever finished.

- The deadline is X-Prometheus-Scrape-Timeout-Seconds less TIMEOUT_MARGIN (time to render
  and send), or DEFAULT_TIMEOUT when Prometheus did not say.
- A collector that misses the deadline is failed for that scrape:
  ksm_scrape_collector_success{collector} 0, and its series are left out.
- A collector whose read is still running past the deadline of the scrape that started it
  is stuck: it is not started again (later scrapes mark it failed at once), so at most one
  thread per collector is ever busy, and their number never grows however many scrapes
  arrive. When the read returns, the next scrape starts it afresh.
- A collector still running within its deadline is joined by a concurrent scrape rather
  than started twice.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

from prometheus_client.core import GaugeMetricFamily, Metric

from ksm_exporter.collectors.source import Collected, ScrapeContext, SourceCollector
from ksm_exporter.state.notices import Notices

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # seconds, when the scraper sends no timeout header (Prometheus does)
TIMEOUT_MARGIN = 0.5  # seconds kept for rendering and sending the answer
MIN_TIMEOUT = 0.1
# The collectors that run last start when the others are done, or at this share of the
# timeout if they are not, so that one slow collector does not cost their series too.
LATER_AT = 0.8


def scrape_timeout(header: str | None) -> float:
    """The time collectors get: Prometheus's X-Prometheus-Scrape-Timeout-Seconds less the
    margin, at least MIN_TIMEOUT; DEFAULT_TIMEOUT without (or with a broken) header."""
    if header is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(header)
    except ValueError:
        return DEFAULT_TIMEOUT
    if not seconds > 0 or seconds == float("inf"):
        return DEFAULT_TIMEOUT
    return max(MIN_TIMEOUT, seconds - TIMEOUT_MARGIN)


@dataclass(frozen=True)
class Outcome:
    """One collector's part of a scrape."""

    name: str
    families: tuple[Metric, ...]
    success: bool
    duration: float


class _Worker:
    """The thread of one collector. The scraper never has two reads of a collector in
    flight, so one thread each is all the pool there is. Not a ThreadPoolExecutor: its
    workers are joined at interpreter exit, so a read stuck for good would keep the
    exporter from ever exiting; these are daemon threads, started at the first read."""

    def __init__(self, name: str) -> None:
        self.name = f"ksm-collect-{name}"
        self._queue: queue.SimpleQueue[tuple[Future[Outcome], Callable[[], Outcome]] | None]
        self._queue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], Outcome]) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        self._queue.put((future, fn))
        return future

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as e:  # handed to whoever waits on the future
                    future.set_exception(e)


class _Run:
    """A collector's read in flight."""

    def __init__(self, future: Future[Outcome], deadline: float) -> None:
        self.future = future
        self.deadline = deadline


# [when, sequence, callback]; the callback is None once cancelled.
Entry = list


class Deadlines:
    """One thread that calls each callback at its monotonic time: a scrape's deadline costs
    no thread of its own. A scrape that finishes early cancels its entry, so that nothing
    of it stays in memory until its deadline (hundreds of scrapes a second would pile up)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[Entry] = []
        self._cancelled = 0
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._run, name="ksm-deadlines", daemon=True)
        self._thread.start()

    def at(self, when: float, callback: Callable[[], None]) -> Entry:
        entry: Entry = [when, next(self._seq), callback]
        with self._cond:
            heapq.heappush(self._heap, entry)
            self._cond.notify()
        return entry

    def cancel(self, entry: Entry) -> None:
        with self._cond:
            if entry[2] is None:
                return
            entry[2] = None
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e[2] is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) - self._cancelled

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                entry = heapq.heappop(self._heap)
                callback = entry[2]
                if callback is None:
                    self._cancelled -= 1
                    continue
                entry[2] = None
            try:
                callback()
            except Exception:  # a bug in one scrape's ending must not end the others
                log.exception("scrape deadline callback failed")


class _Scrape:
    """One scrape waiting for its collectors or its deadline, whichever comes first. The
    collectors in `later` start once the others are done (or near the deadline): they
    report on the reads of the others (read error counters)."""

    def __init__(
        self,
        scraper: Scraper,
        names: Sequence[str],
        later: Sequence[str],
        ctx: ScrapeContext,
        started: float,
        deadline: float,
    ) -> None:
        self.scraper = scraper
        self.names = names
        self.later = list(later)
        self.ctx = ctx
        self.started = started
        self.deadline = deadline
        self.runs: dict[str, _Run] = {}
        self.result: Future[list[Metric]] = Future()
        self.entries: list[Entry] = []
        self._lock = threading.Lock()
        # True from taking names to start until their runs are in self.runs: meanwhile a
        # collector finishing elsewhere must not end the scrape.
        self._starting = True

    def start(self, names: Sequence[str]) -> None:
        runs = self.scraper._start(names, self.ctx, self.deadline)
        with self._lock:
            self.runs.update(runs)
            self._starting = False
        for run in runs.values():
            run.future.add_done_callback(self.collector_done)
        self.collector_done()  # nothing to wait for (every one stuck)

    def collector_done(self, _: object = None) -> None:
        with self._lock:
            if self._starting or self.result.done():
                return
            if not all(r.future.done() for r in self.runs.values()):
                return
            later, self.later = self.later, []
            self._starting = bool(later)
        if later:
            self.start(later)
        else:
            self.finish()

    def start_later(self) -> None:
        """Near the deadline: start the later ones even though the others still run."""
        with self._lock:
            if self._starting or self.result.done():
                return
            later, self.later = self.later, []
            self._starting = bool(later)
        if later:
            self.start(later)

    def finish(self) -> None:
        with self._lock:
            if self.result.done():
                return
            now = time.monotonic()
            outcomes: list[Outcome] = []
            for name in self.names:
                run = self.runs.get(name)
                if run is not None and run.future.done():
                    outcomes.append(run.future.result())
                else:  # missed the deadline, or stuck since an earlier scrape
                    waited = now - self.started if run is not None else 0.0
                    outcomes.append(Outcome(name, (), False, waited))
            self.runs = {}
            self.result.set_result(assemble(outcomes))
        for entry in self.entries:
            self.scraper._deadlines.cancel(entry)


def assemble(outcomes: Sequence[Outcome]) -> list[Metric]:
    """The collectors' families, then node_exporter's two metrics about the collectors. A
    collector that could observe part of its source keeps the series of that part (its
    success is 0 all the same); one that missed the deadline has none."""
    families: list[Metric] = [f for o in outcomes for f in o.families]
    duration = GaugeMetricFamily(
        "ksm_scrape_collector_duration_seconds",
        "How long each collector took in this scrape (for a failed one: how long it was "
        "waited for).",
        labels=["collector"],
    )
    success = GaugeMetricFamily(
        "ksm_scrape_collector_success",
        "1 when the collector observed its source in this scrape; 0 when it missed the "
        "scrape's deadline, is stuck on an earlier read, or could not observe (part of) its "
        "source (its series from that source are left out).",
        labels=["collector"],
    )
    for o in outcomes:
        duration.add_metric([o.name], o.duration)
        success.add_metric([o.name], 1.0 if o.success else 0.0)
    return [*families, duration, success]


class Scraper:
    def __init__(
        self,
        collectors: Mapping[str, SourceCollector],
        context: Callable[[], ScrapeContext],
        notices: Notices,
        last: Collection[str] = (),
    ) -> None:
        self.collectors = dict(collectors)
        self.context = context
        self.notices = notices
        self.last = frozenset(last)  # started after the others: they report on their reads
        # One thread per collector: a collector never has two reads in flight, so nothing
        # queues, and a stuck read cannot starve the others.
        self._workers = {name: _Worker(name) for name in self.collectors}
        self._deadlines = Deadlines()
        self._lock = threading.Lock()
        self._inflight: dict[str, _Run] = {}
        self._stuck: set[str] = set()  # noted once each, until they recover

    def stuck(self) -> list[str]:
        """Collectors whose read has outlived its scrape's deadline and is still running."""
        now = time.monotonic()
        with self._lock:
            return sorted(
                name
                for name, run in self._inflight.items()
                if not run.future.done() and now >= run.deadline
            )

    def scrape(self, names: Sequence[str], timeout: float) -> Future[list[Metric]]:
        """Start the collectors `names` (enabled ones, in registry order); the future holds
        the families to render, by `timeout` seconds from now at the latest."""
        started = time.monotonic()
        deadline = started + timeout
        first = [n for n in names if n not in self.last]
        scrape = _Scrape(
            self, names, [n for n in names if n in self.last], self.context(), started, deadline
        )
        scrape.entries = [
            self._deadlines.at(started + LATER_AT * timeout, scrape.start_later),
            self._deadlines.at(deadline, scrape.finish),
        ]
        scrape.start(first)
        return scrape.result

    def _start(self, names: Sequence[str], ctx: ScrapeContext, deadline: float) -> dict[str, _Run]:
        """Submit each collector, unless its read is in flight (shared) or stuck (left out)."""
        now = time.monotonic()
        runs: dict[str, _Run] = {}
        with self._lock:
            for name in names:
                run = self._inflight.get(name)
                if run is not None and not run.future.done():
                    if now >= run.deadline:
                        if name not in self._stuck:
                            # Logged now, once, not through the notices: the stuck read
                            # may be the watcher's too (meminfo), and then nobody flushes.
                            self._stuck.add(name)
                            log.warning(
                                "collector %s is stuck on a read; failing it until the read "
                                "returns",
                                name,
                            )
                        continue
                    runs[name] = run  # in flight for a concurrent scrape: share its read
                    continue
                if name in self._stuck:
                    self._stuck.discard(name)
                    log.info("collector %s reads again", name)
                run = _Run(self._workers[name].submit(partial(self._collect, name, ctx)), deadline)
                self._inflight[name] = run
                runs[name] = run
        return runs

    def _collect(self, name: str, ctx: ScrapeContext) -> Outcome:
        started = time.perf_counter()
        try:
            collected: Collected = self.collectors[name].collect(ctx)
            missing = collected.missing  # logged by the reads' ReadErrors, or at start
        except Exception as e:  # a bug in a collector: fail it, keep the others
            self.notices.note(log, logging.ERROR, "collector %s failed: %r", name, e)
            collected, missing = Collected(()), repr(e)
        return Outcome(name, collected.families, missing is None, time.perf_counter() - started)

    def shutdown(self) -> None:
        """Let idle workers end; one stuck on a read is a daemon thread and ends with us."""
        for worker in self._workers.values():
            worker.stop()
