"""Scrapes with deadlines: the collectors run off the HTTP loop, on a small pool of worker
threads, and a scrape answers by its deadline with whatever finished.

- The deadline is X-Prometheus-Scrape-Timeout-Seconds less TIMEOUT_MARGIN (time to render
  and send), clamped to MIN_TIMEOUT..MAX_TIMEOUT, or DEFAULT_TIMEOUT when Prometheus did
  not say (or said something that is not a positive number). The clamp is what bounds a
  read's life: a client cannot start reads that later scrapes would wait on for ever.
- The collectors a scrape starts run one after another on one worker (a batch): a hand-off
  between threads costs about as much as a collector's read, so one per collector would
  double a scrape's CPU. POOL_SIZE workers take the batches in turn. Should a read hang, a
  rescue worker takes the rest of its batch at RESCUE_EVERY of the timeout (and again after
  each further RESCUE_EVERY), so the others are still served by the deadline. Every scrape
  waiting on a read still queued rescues that read's batch at its own pace, also one that
  another scrape (with a longer timeout) started.
- A collector that misses the deadline is failed for that scrape:
  ksm_scrape_collector_success{collector} 0, and its series are left out; one that had not
  even started is dropped from its batch.
- A collector whose read is still running past the deadline of the scrape that started it
  is stuck: it is not started again (later scrapes mark it failed at once), so a worker is
  held only by a distinct stuck read, and the number of threads stays at POOL_SIZE plus
  one per stuck read however many scrapes arrive. When the read returns, the next scrape
  starts it afresh.
- A collector still running within its deadline is joined by a concurrent scrape rather
  than started twice.

The bookkeeping is plain objects under one lock, not a concurrent.futures.Future per
collector (a Future is a Condition, and its callbacks another lock round each): per scrape
it costs one queue put, one deadline entry and one Future for the answer.
"""

from __future__ import annotations

import collections
import enum
import functools
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import NamedTuple, Optional

from prometheus_client.core import GaugeMetricFamily, Metric

from ksm_exporter.collectors.source import Collected, ScrapeContext, SourceCollector
from ksm_exporter.daemon.threads import set_native_thread_name
from ksm_exporter.readers.vm_processes import VmProcess
from ksm_exporter.state.notices import Notices

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # seconds, when the scraper sends no timeout header (Prometheus does)
TIMEOUT_MARGIN = 0.5  # seconds kept for rendering and sending the answer
MIN_TIMEOUT = 0.1
# Prometheus allows a scrape_timeout of any length, but no scrape of this exporter needs
# more than seconds; past this, a hung read would be waited on (and joined) for too long.
MAX_TIMEOUT = 120.0
# A batch still holding collectors not started gets one more worker at each such share of
# the timeout: a hung read delays the collectors queued behind it by this much at most.
RESCUE_EVERY = 0.2
# Workers that always exist once started. One: the collectors hold the GIL, so a second
# would not make scrapes faster, only the process bigger. A scrape queued behind a hung
# read gets a rescue worker (below), which then stays for the next ones.
POOL_SIZE = 1


def scrape_timeout(header: str | None) -> float:
    """The time collectors get: Prometheus's X-Prometheus-Scrape-Timeout-Seconds less the
    margin, within MIN_TIMEOUT..MAX_TIMEOUT (1e300 and inf: MAX_TIMEOUT); DEFAULT_TIMEOUT
    without a header, or with one that is not a positive number (NaN, 0, -1, "ten")."""
    if header is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(header)
    except ValueError:
        return DEFAULT_TIMEOUT
    if not seconds > 0:  # NaN too; inf is clamped below
        return DEFAULT_TIMEOUT
    return min(MAX_TIMEOUT, max(MIN_TIMEOUT, seconds - TIMEOUT_MARGIN))


class Outcome(NamedTuple):
    """One collector's part of a scrape."""

    name: str
    families: tuple[Metric, ...]
    success: bool
    duration: float


class _Pool:
    """Worker threads taking jobs from one queue. Not a ThreadPoolExecutor: its workers are
    joined at interpreter exit, so a read stuck for good would keep the exporter from ever
    exiting; these are daemon threads. `submit` starts a worker while fewer than `size`
    exist and none is idle; `extra` starts one whenever none is idle (every worker held by
    a hung read)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)
        self._grow(self.size)

    def extra(self, job: Callable[[], None]) -> None:
        """Run `job` now even if every worker is busy."""
        self._jobs.put(job)
        self._grow(None)

    def _grow(self, limit: int | None) -> None:
        with self._lock:
            if self._idle or (limit is not None and self._workers >= limit):
                return
            name = f"ksm-collect-{self._workers}"
            self._workers += 1
            self._idle += 1  # counted idle until it takes its first job
        threading.Thread(target=self._run, args=(name,), name=name, daemon=True).start()

    def _run(self, name: str) -> None:
        set_native_thread_name(name)  # else it shows the name of the thread that started it
        while (job := self._jobs.get()) is not None:
            with self._lock:
                self._idle -= 1
            try:
                job()
            except Exception:  # a batch hands collector errors to its scrapes; this is a bug
                log.exception("collector worker failed")
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        with self._lock:
            workers = self._workers
        for _ in range(workers):
            self._jobs.put(None)


class ReadState(enum.IntEnum):
    QUEUED = 0  # in a batch, not started
    RUNNING = 1
    DONE = 2  # its outcome is there
    DROPPED = 3  # left queued past its deadline (behind a hung read): never started


# Module-level names: compared under the lock on every read.
_QUEUED, _RUNNING, _DONE, _DROPPED = ReadState


class _Read:
    """One collector's read, started by one scrape and shared by concurrent ones."""

    __slots__ = ("batch", "deadline", "name", "outcome", "state", "waiters")

    def __init__(self, name: str, deadline: float, batch: collections.deque[_Read]) -> None:
        self.name = name
        self.deadline = deadline  # of the scrape that started it
        self.batch = batch  # the reads started with it, run one after another
        self.state: ReadState = _QUEUED
        self.outcome: Outcome | None = None
        self.waiters: set[_Scrape] = set()


class _Scrape:
    """One scrape waiting for its reads or its deadline, whichever comes first."""

    __slots__ = (
        "deadline",
        "entry",
        "finished",
        "names",
        "reads",
        "result",
        "started",
        "waiting",
    )

    def __init__(self, names: Sequence[str], started: float, deadline: float) -> None:
        self.names = names
        self.started = started
        self.deadline = deadline
        self.reads: dict[str, _Read] = {}
        self.waiting = 0  # reads not done yet
        self.entry: Entry | None = None
        self.finished = False
        self.result: Future[list[Metric]] = Future()


@dataclass(eq=False)
class Entry:
    """A callback due at `when` (monotonic); None once cancelled or run."""

    when: float
    callback: Optional[Callable[[], None]]


class Deadlines:
    """One thread that calls each callback at its monotonic time: a scrape's deadline costs
    no thread of its own. A scrape that finishes early cancels its entry, so that nothing
    of it stays in memory until its deadline (hundreds of scrapes a second would pile up).

    The thread also wakes every IDLE_WAKE seconds, and a new entry wakes it only when it is
    due before that: a scrape's entry (seconds ahead, cancelled a millisecond later) then
    costs no thread switch at all, which is most of what a deadline would cost a scrape."""

    IDLE_WAKE = 1.0
    THREAD_NAME = "ksm-deadlines"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # (when, sequence, entry): the sequence orders entries due at the same time.
        self._heap: list[tuple[float, int, Entry]] = []
        self._cancelled = 0
        self._seq = itertools.count()
        self._wake_at = 0.0  # when the thread looks next (monotonic)
        self._thread = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)
        self._thread.start()

    def at(self, when: float, callback: Callable[[], None]) -> Entry:
        entry = Entry(when, callback)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), entry))
            if when < self._wake_at:
                self._cond.notify()
        return entry

    def cancel(self, entry: Entry) -> None:
        with self._cond:
            if entry.callback is None:
                return
            entry.callback = None
            self._cancelled += 1
            while self._heap and self._heap[0][2].callback is None:  # cancelled ones on top: gone
                heapq.heappop(self._heap)
                self._cancelled -= 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e[2].callback is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) - self._cancelled

    def _run(self) -> None:
        set_native_thread_name(self.THREAD_NAME)
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
                entry = heapq.heappop(self._heap)[2]
                callback = entry.callback
                if callback is None:
                    self._cancelled -= 1
                    continue
                entry.callback = None
            try:
                callback()
            except Exception:  # a bug in one scrape's ending must not end the others
                log.exception("scrape deadline callback failed")


def assemble(outcomes: Sequence[Outcome]) -> list[Metric]:
    """The collectors' families, then node_exporter's two metrics about the collectors. A
    collector that could observe part of its source keeps the series of that part (its
    success is 0 all the same); one that missed the deadline has none. A family without
    samples (no transition yet, no read error) is left out, as client_golang does: its HELP
    and TYPE alone say nothing."""
    families: list[Metric] = [f for o in outcomes for f in o.families if f.samples]
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
        self._pool = _Pool(POOL_SIZE)
        self._deadlines = Deadlines()
        # Guards every _Read and _Scrape, and _inflight/_stuck: one lock, taken briefly.
        self._lock = threading.Lock()
        self._inflight: dict[str, _Read] = {}  # reads queued or running
        self._stuck: set[str] = set()  # noted once each, until they recover
        # The VMs of the latest scrape that read them, for the landing page (which never
        # waits on a read): replaced whole, so a reader sees one scrape's list.
        self.latest_vms: tuple[VmProcess, ...] | None = None

    def stuck(self) -> list[str]:
        """Collectors whose read has outlived its scrape's deadline and is still running."""
        now = time.monotonic()
        with self._lock:
            return sorted(
                name
                for name, read in self._inflight.items()
                if read.state == _RUNNING and now >= read.deadline
            )

    def scrape(self, names: Sequence[str], timeout: float) -> Future[list[Metric]]:
        """Start the collectors `names` (enabled ones, in registry order); the future holds
        the families to render, by `timeout` seconds from now at the latest."""
        started = time.monotonic()
        scrape = _Scrape(names, started, started + timeout)
        # In one batch, the `last` ones after the others: they report on the others' reads
        # (read error counters). Should a read hang, a rescue worker may run them earlier.
        order = [n for n in names if n not in self.last] + [n for n in names if n in self.last]
        batch: collections.deque[_Read] = collections.deque()
        with self._lock:
            for name in order:
                read, new = self._join_or_start(name, started, scrape.deadline, batch)
                if read is None:
                    continue  # stuck: failed at once
                if new:
                    batch.append(read)
                read.waiters.add(scrape)
                scrape.reads[name] = read
            scrape.waiting = len(scrape.reads)
        if not scrape.waiting:  # every one stuck
            self._finish(scrape)
            return scrape.result
        step = RESCUE_EVERY * timeout
        # Armed before the batch starts: a batch done at once must find it to cancel it.
        scrape.entry = self._deadlines.at(
            min(scrape.deadline, started + step), lambda: self._tick(scrape, step)
        )
        if batch:
            ctx = self.context()
            self._pool.submit(lambda: self._drain(batch, ctx))
        return scrape.result

    def _join_or_start(
        self, name: str, now: float, deadline: float, batch: collections.deque[_Read]
    ) -> tuple[_Read | None, bool]:
        """(Under the lock.) The read of `name` this scrape waits on, and whether it is new:
        one in flight within its deadline, or a new one; None when the one in flight is
        stuck."""
        read = self._inflight.get(name)
        if read is not None and now >= read.deadline:
            if read.state == _QUEUED:  # behind a hung read past its deadline: start afresh
                read.state = _DROPPED
                read = None
            else:
                if name not in self._stuck:
                    # Logged now, once, not through the notices: the stuck read may be the
                    # watcher's too (meminfo), and then nobody flushes them.
                    self._stuck.add(name)
                    log.warning(
                        "collector %s is stuck on a read; failing it until the read returns",
                        name,
                    )
                return None, False
        if read is None:
            if name in self._stuck:
                self._stuck.discard(name)
                log.info("collector %s reads again", name)
            read = _Read(name, deadline, batch)
            self._inflight[name] = read
            return read, True
        return read, False

    def _drain(self, batch: collections.deque[_Read], ctx: ScrapeContext) -> None:
        """Run the reads of `batch` not yet taken (any number of workers may drain it)."""
        while True:
            with self._lock:
                while batch and batch[0].state != _QUEUED:
                    batch.popleft()  # dropped past its deadline
                if not batch:
                    return
                read = batch.popleft()
                read.state = _RUNNING
            outcome = self._collect(read.name, ctx)
            with self._lock:
                read.state, read.outcome = _DONE, outcome
                if self._inflight.get(read.name) is read:
                    del self._inflight[read.name]
                done = []
                for scrape in read.waiters:
                    scrape.waiting -= 1
                    if not scrape.waiting:
                        done.append(scrape)
                read.waiters.clear()
            for scrape in done:
                self._finish(scrape)

    def _tick(self, scrape: _Scrape, step: float) -> None:
        """The Deadlines thread, every `step` seconds of a scrape not finished: at its
        deadline it ends it; before, each batch holding a read it waits on that has not
        started gets one more worker (its own batch, or one a concurrent scrape started)."""
        now = time.monotonic()
        if now >= scrape.deadline:
            self._finish(scrape)
            return
        with self._lock:
            if scrape.finished:
                return
            queued = {id(r.batch): r.batch for r in scrape.reads.values() if r.state == _QUEUED}
            scrape.entry = self._deadlines.at(
                min(scrape.deadline, now + step), lambda: self._tick(scrape, step)
            )
        if queued:
            ctx = self.context()
            for batch in queued.values():
                self._pool.extra(functools.partial(self._drain, batch, ctx))

    def _finish(self, scrape: _Scrape) -> None:
        now = time.monotonic()
        outcomes: list[Outcome] = []
        with self._lock:
            if scrape.finished:
                return
            scrape.finished = True
            for name in scrape.names:
                read = scrape.reads.get(name)
                if read is not None and read.outcome is not None:
                    outcomes.append(read.outcome)
                    continue
                # Missed the deadline, or stuck since an earlier scrape.
                outcomes.append(Outcome(name, (), False, now - scrape.started if read else 0.0))
                if read is None:
                    continue
                read.waiters.discard(scrape)
                if read.state == _QUEUED and now >= read.deadline:
                    # Still behind a hung read: the next scrape starts it afresh.
                    read.state = _DROPPED
                    if self._inflight.get(name) is read:
                        del self._inflight[name]
            scrape.reads = {}
            entry, scrape.entry = scrape.entry, None
        if entry is not None:
            self._deadlines.cancel(entry)
        scrape.result.set_result(assemble(outcomes))  # renders (its callbacks): not locked

    def _collect(self, name: str, ctx: ScrapeContext) -> Outcome:
        started = time.perf_counter()
        try:
            collected: Collected = self.collectors[name].collect(ctx)
            missing = collected.missing  # logged by the reads' ReadErrors, or at start
        except Exception as e:  # a bug in a collector: fail it, keep the others
            self.notices.note(log, logging.ERROR, "collector %s failed: %r", name, e)
            collected, missing = Collected(()), repr(e)
        if collected.vms is not None:
            self.latest_vms = collected.vms
        return Outcome(name, collected.families, missing is None, time.perf_counter() - started)

    def shutdown(self) -> None:
        """Let idle workers end; one stuck on a read is a daemon thread and ends with us."""
        self._pool.shutdown()
