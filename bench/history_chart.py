"""What the landing page's picture costs: the history's memory and the page's render time,
beside an in-process scrape (docs/performance.md shows a run).

    python -m bench.history_chart [--runs 30]

Builds the daemon as `serve` does on the linux-6.18 fixture, in this process, and measures
its RSS (VmRSS) before and after filling every ring of the history (8 days of polls every
5 s, as the watcher adds them, edges every few hours), then the time to render `/` with
the picture drawn anew (the history changed) and from the cache (it did not), and the time
of an in-process /metrics with an empty and with a full history, and the save of the
points beside --state.file. Not a test.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

from ksm_exporter.commands.serve import Daemon
from ksm_exporter.daemon.web.app import Response
from ksm_exporter.model.edge_cause import Cause, EdgeContext
from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.readers.sysfs_ksm import KsmReading
from ksm_exporter.state.history import TIERS, budget_bytes
from ksm_exporter.state.history_file import HistoryFile
from ksm_exporter.state.snapshot import Snapshot
from ksm_exporter.state.state_file import StateFile
from tests.support import FIXTURES
from tests.support.in_process import built_daemon

GIB = 2**30


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def get(d: Daemon, path: str) -> Response:
    result = d.server.app.handle("GET", path, {})
    return result.result(30) if isinstance(result, Future) else result


def timed(f: object, runs: int) -> float:
    """Median milliseconds of `runs` calls."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        f()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def fill(d: Daemon, history: object, days: float) -> int:
    """Polls every 5 s over `days`, free memory swinging around a threshold, an edge
    whenever it crosses; returns the number of polls."""
    now = time.time()
    start = now - days * 86400
    tracker = d.monitor.tracker
    run, polls = 0, 0
    tracker.observe(run, None, start)
    threshold = 6 * GIB
    t = start
    while t < now:
        free = int(threshold + 1.5 * GIB * math.sin((t - start) / 86400 * 6 * math.pi))
        memory = MemInfo(total=32 * GIB, free=free, available=free + GIB, buffers=GIB // 2)
        wanted = 1 if free + GIB // 2 < threshold else 0
        if wanted != run:
            run = wanted
            context = EdgeContext(Cause.KSMTUNED, None, threshold, 20 * GIB, free + GIB // 2)
            edge = tracker.observe(run, memory, t, context)
            if edge is not None:
                history.note_edge(edge)  # type: ignore[attr-defined]
        ksm = KsmReading(present=True, values={"run": run, "pages_sharing": 400_000 * run})
        history.observe(Snapshot(t, ksm, memory, 4096))  # type: ignore[attr-defined]
        t += 5.0
        polls += 1
    return polls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    with built_daemon(FIXTURES / "linux-6.18", "--collector.ksmtuned.config=/nonexistent") as d:
        app = d.server.app
        history = app.watched.history
        d.watcher.poll_once()
        get(d, "/")
        get(d, "/metrics")
        gc.collect()
        empty_rss = rss_mb()
        scrape_empty = timed(lambda: get(d, "/metrics"), args.runs)
        polls = fill(d, history, days=8)
        gc.collect()
        full_rss = rss_mb()
        get(d, "/")  # the picture drawn once, kept
        gc.collect()
        page_rss = rss_mb()
        points = len(history.series().times)

        def fresh() -> None:
            history.version += 1  # as after a poll: the picture is drawn anew
            get(d, "/")

        render_fresh = timed(fresh, args.runs)
        render_cached = timed(lambda: get(d, "/"), args.runs)
        scrape_full = timed(lambda: get(d, "/metrics"), args.runs)
        page = get(d, "/").body
        with tempfile.TemporaryDirectory() as tmp:
            saved_to = Path(tmp) / "state.history"
            history_file = HistoryFile(saved_to, history, StateFile(Path(tmp) / "state"))
            save_ms = timed(history_file.save, 5)
            saved_kib = saved_to.stat().st_size / 1024
    rings = ", ".join(f"{t.points} x {t.step:g} s" for t in TIERS)
    print(f"history rings: {rings}; arrays {budget_bytes() / 1024:.0f} KiB (fixed)")
    print(f"polls fed: {polls} (8 days every 5 s); points kept: {points}")
    print(f"RSS empty history: {empty_rss:.1f} MB; full: {full_rss:.1f} MB", end="")
    print(f" (+{full_rss - empty_rss:.2f} MB); with the page drawn: {page_rss:.1f} MB")
    print(f"landing page: {len(page) / 1024:.0f} KiB")
    print(f"render / (picture drawn anew), median ms: {render_fresh:.1f}")
    print(f"render / (picture cached), median ms: {render_cached:.2f}")
    print(f"save of PATH.history (every 5 min, watcher): {save_ms:.1f} ms, {saved_kib:.0f} KiB")
    print(
        f"in-process /metrics median ms: empty history {scrape_empty:.2f}, full {scrape_full:.2f}"
    )


if __name__ == "__main__":
    main()
