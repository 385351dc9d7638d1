"""Scrapes with deadlines: the collectors run off the HTTP loop, on a small pool of worker
threads, and a scrape answers by its deadline with whatever finished.

- The deadline is X-Prometheus-Scrape-Timeout-Seconds less TIMEOUT_MARGIN (time to render
  and send), or DEFAULT_TIMEOUT when Prometheus did not say.
- The collectors a scrape starts run one after another on one worker (a batch): a hand-off
  between threads costs about as much as a collector's read, so one per collector would
  double a scrape's CPU. Should one of them hang, a rescue worker takes the rest of the
  batch at RESCUE_EVERY of the timeout (and again after each further RESCUE_EVERY), so the
  others are still served by the deadline.
- A collector that misses the deadline is failed for that scrape:
  ksm_scrape_collector_success{collector} 0, and its series are left out; one that had not
  even started is dropped from its batch.
- A collector whose read is still running past the deadline of the scrape that started it
  is stuck: it is not started again (later scrapes mark it failed at once), so a worker is
  held only by a distinct stuck read, and the number of threads never grows however many
  scrapes arrive. When the read returns, the next scrape starts it afresh.
- A collector still running within its deadline is joined by a concurrent scrape rather
  than started twice.
"""

from __future__ import annotations

import collections
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
# A batch still holding collectors not started gets one more worker at each such share of
# the timeout: a hung read delays the collectors queued behind it by this much at most.
RESCUE_EVERY = 0.2


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
    """A pool thread. Not a ThreadPoolExecutor: its workers are joined at interpreter exit,
    so a read stuck for good would keep the exporter from ever exiting; these are daemon
    threads, started when no idle one is left."""

    def __init__(self, pool: _Pool, name: str) -> None:
        self.pool = pool
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while (fn := self._queue.get()) is not None:
            try:
                fn()
            except Exception:  # a batch hands its errors to its futures; this is a bug
                log.exception("collector worker failed")
            self.pool.idle(self)


class _Pool:
    """Idle workers are reused; a new one starts only when every worker is busy, which
    takes a stuck read per busy worker beyond the one or two batches in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
            else:
                worker = _Worker(self, f"ksm-collect-{len(self._all)}")
                self._all.append(worker)
        worker.run(fn)

    def idle(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def shutdown(self) -> None:
        with self._lock:
            for worker in self._all:
                worker.stop()


class _Batch:
    """Collectors to run one after another; any number of workers may drain it."""

    def __init__(self, items: list[tuple[Future[Outcome], Callable[[], Outcome]]]) -> None:
        self._items = collections.deque(items)
        self._lock = threading.Lock()

    def pending(self) -> bool:
        with self._lock:
            return bool(self._items)

    def drain(self) -> None:
        while True:
            with self._lock:
                if not self._items:
                    return
                future, fn = self._items.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # its scrape ended before it started
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to whoever waits on the future
                future.set_exception(e)


class _Rescue:
    """One more worker for a batch at each `step` seconds while it holds collectors not
    started and its deadline is ahead; cancelled when its scrape ends."""

    def __init__(self, scraper: Scraper, batch: _Batch, deadline: float, step: float) -> None:
        self.scraper = scraper
        self.batch = batch
        self.deadline = deadline
        self.step = step
        self._lock = threading.Lock()
        self._entry: Entry | None = None
        self._done = False

    def arm(self, when: float) -> None:
        with self._lock:
            if not self._done:
                self._entry = self.scraper._deadlines.at(when, self.fire)

    def fire(self) -> None:
        now = time.monotonic()
        if self.batch.pending() and now < self.deadline:
            self.scraper._pool.submit(self.batch.drain)
            self.arm(now + self.step)

    def cancel(self) -> None:
        with self._lock:
            self._done = True
            if self._entry is not None:
                self.scraper._deadlines.cancel(self._entry)


class _Run:
    """A collector's read in flight."""

    def __init__(self, future: Future[Outcome], deadline: float) -> None:
        self.future = future
        self.deadline = deadline


# [when, sequence, callback]; the callback is None once cancelled.
Entry = list


class Deadlines:
    """One thread that calls each callback at its monotonic time: a scrape's deadline costs
    no thread of its own. A scrape that finishes early cancels its entries, so that nothing
    of it stays in memory until its deadline (hundreds of scrapes a second would pile up).

    The thread also wakes every IDLE_WAKE seconds, and a new entry wakes it only when it is
    due before that: a scrape's entries (seconds ahead, cancelled a millisecond later) then
    cost no thread switch at all, which is most of what a deadline would cost a scrape."""

    IDLE_WAKE = 1.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[Entry] = []
        self._cancelled = 0
        self._seq = itertools.count()
        self._wake_at = 0.0  # when the thread looks next (monotonic)
        self._thread = threading.Thread(target=self._run, name="ksm-deadlines", daemon=True)
        self._thread.start()

    def at(self, when: float, callback: Callable[[], None]) -> Entry:
        entry: Entry = [when, next(self._seq), callback]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if when < self._wake_at:
                self._cond.notify()
        return entry

    def cancel(self, entry: Entry) -> None:
        with self._cond:
            if entry[2] is None:
                return
            entry[2] = None
            self._cancelled += 1
            while self._heap and self._heap[0][2] is None:  # cancelled ones on top: gone
                heapq.heappop(self._heap)
                self._cancelled -= 1
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
                while True:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    wait = self.IDLE_WAKE
                    if self._heap:
                        wait = min(wait, self._heap[0][0] - now)
                    self._wake_at = now + wait
                    self._cond.wait(wait)
                self._wake_at = 0.0  # running callbacks: new entries need not wake us
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
    """One scrape waiting for its collectors or its deadline, whichever comes first."""

    def __init__(
        self,
        scraper: Scraper,
        names: Sequence[str],
        ctx: ScrapeContext,
        started: float,
        deadline: float,
    ) -> None:
        self.scraper = scraper
        self.names = names
        self.ctx = ctx
        self.started = started
        self.deadline = deadline
        self.runs: dict[str, _Run] = {}
        self.result: Future[list[Metric]] = Future()
        self.entries: list[Entry] = []
        self.rescues: list[_Rescue] = []
        self._lock = threading.Lock()
        # True from taking names to start until their runs are in self.runs: meanwhile a
        # collector finishing elsewhere must not end the scrape.
        self._starting = True
        self._waiting = 0  # runs not done yet

    def start(self, names: Sequence[str]) -> None:
        runs = self.scraper._start(names, self.ctx, self.deadline, self.rescues)
        with self._lock:
            self.runs.update(runs)
            self._waiting = len(runs)
            self._starting = False
        for run in runs.values():
            run.future.add_done_callback(self.collector_done)
        self.collector_done(None)  # nothing to wait for (every one stuck)

    def collector_done(self, done: object) -> None:
        """A collector's read ended (None: the runs were just registered)."""
        with self._lock:
            if done is not None:
                self._waiting -= 1
            if self._starting or self._waiting or self.result.done():
                return
        self.finish()

    def finish(self) -> None:
        with self._lock:
            if self.result.done():
                return
            now = time.monotonic()
            outcomes: list[Outcome] = []
            unstarted: list[Future[Outcome]] = []
            for name in self.names:
                run = self.runs.get(name)
                if run is not None and run.future.done() and not run.future.cancelled():
                    outcomes.append(run.future.result())
                else:  # missed the deadline, or stuck since an earlier scrape
                    waited = now - self.started if run is not None else 0.0
                    outcomes.append(Outcome(name, (), False, waited))
                    if run is not None and now >= run.deadline:
                        unstarted.append(run.future)
            self.runs = {}
            self.result.set_result(assemble(outcomes))
        for entry in self.entries:
            self.scraper._deadlines.cancel(entry)
        for rescue in self.rescues:
            rescue.cancel()
        for future in unstarted:  # still queued behind a hung read: the next scrape runs it
            future.cancel()


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
        self.last = frozenset(last)  # run after the others: they report on their reads
        self._pool = _Pool()
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
        scrape = _Scrape(self, names, self.context(), started, deadline)
        scrape.entries = [self._deadlines.at(deadline, scrape.finish)]
        # In one batch, the `last` ones after the others: they report on the others' reads
        # (read error counters). Should a read hang, a rescue worker may run them earlier.
        scrape.start(
            [n for n in names if n not in self.last] + [n for n in names if n in self.last]
        )
        return scrape.result

    def _start(
        self, names: Sequence[str], ctx: ScrapeContext, deadline: float, rescues: list[_Rescue]
    ) -> dict[str, _Run]:
        """Start the collectors `names` as one batch, less those whose read is in flight
        (shared) or stuck (left out); its rescue is added to `rescues`."""
        now = time.monotonic()
        runs: dict[str, _Run] = {}
        items: list[tuple[Future[Outcome], Callable[[], Outcome]]] = []
        with self._lock:
            for name in names:
                run = self._inflight.get(name)
                if run is not None and now >= run.deadline and run.future.cancel():
                    run = None  # queued behind a hung read past its deadline: start afresh
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
                future: Future[Outcome] = Future()
                items.append((future, partial(self._collect, name, ctx)))
                run = _Run(future, deadline)
                self._inflight[name] = run
                runs[name] = run
        if items:
            batch = _Batch(items)
            self._pool.submit(batch.drain)
            rescue = _Rescue(self, batch, deadline, RESCUE_EVERY * (deadline - now))
            rescue.arm(now + rescue.step)
            rescues.append(rescue)
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
        self._pool.shutdown()
