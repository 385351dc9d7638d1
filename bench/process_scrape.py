"""How long a scrape takes on a compute node's process table (docs/per-vm.md shows a run).

    python -m bench.process_scrape [--processes 10000] [--vms 200] [--runs 30]

Builds a fake procfs of --processes processes, --vms of them qemu (tests/support/fake_procfs.py),
and times each step of a scrape, then the whole /metrics body of the exporter's collectors
(every collector of the registry, KSM from the linux-6.18 fixture) run by its scraper.
The first row is the floor: the bare open/read/close of every /proc/PID/comm, which any
fresh look at every process's name costs (the first scrape pays it; later ones keep names,
see ksm_exporter/collectors/process_names.py).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from prometheus_client import generate_latest

from ksm_exporter.collectors.process_names import ProcessNameCache
from ksm_exporter.collectors.registry import (
    COLLECTORS,
    RUN_LAST,
    Sources,
    build_collectors,
    process_name_cache,
    scrape_context,
)
from ksm_exporter.collectors.source import ScrapeContext, SourceCollector
from ksm_exporter.daemon.scrape import Scraper
from ksm_exporter.model.defaults import QEMU_PATTERN
from ksm_exporter.model.derived import page_size
from ksm_exporter.readers import Paths
from ksm_exporter.readers.ksmtuned import committed_kb
from ksm_exporter.readers.ksmtuned_rule import FEDORA
from ksm_exporter.readers.processes import read_process_names
from ksm_exporter.readers.vm_processes import read_vm_processes
from ksm_exporter.state.notices import Notices
from ksm_exporter.state.read_errors import ProcessReadErrors, ReadErrors
from ksm_exporter.state.settle import SettleTracker
from ksm_exporter.state.transitions import TransitionTracker
from tests.support import FIXTURES
from tests.support.collect import Families
from tests.support.fake_procfs import write_compute_node

# The collectors that read the process table (the rest read sysfs, meminfo or state).
PROCESS_TABLE = ("process", "ksmd", "ksmtuned", "vmstat")


def exporter_collectors(proc: Path) -> tuple[dict[str, SourceCollector], Sources]:
    notices = Notices()
    sources = Sources(
        paths=Paths(FIXTURES / "linux-6.18" / "sys", proc),
        page_size=page_size(),
        read_errors=ReadErrors(notices),
        process_errors=ProcessReadErrors(notices),
        tracker=TransitionTracker(),
        settle=SettleTracker(),
        state_file=None,
        process_pattern=re.compile(QEMU_PATTERN),
        process_max=200,
        ksmtuned_config=FIXTURES / "ksmtuned" / "stock.conf",
    )
    return build_collectors([c.name for c in COLLECTORS], sources), sources


def process_table_body(
    collectors: dict[str, SourceCollector], context: Callable[[], ScrapeContext]
) -> bytes:
    """The process-table collectors of one scrape, one after the other, as text."""
    ctx = context()
    families = [f for name in PROCESS_TABLE for f in collectors[name].collect(ctx).families]
    return generate_latest(Families(families))  # type: ignore[arg-type]


def bare_comm_reads(proc: Path) -> int:
    n = 0
    for entry in os.listdir(proc):
        if entry.isdigit():
            fd = os.open(f"{proc}/{entry}/comm", os.O_RDONLY)
            os.read(fd, 64)
            os.close(fd)
            n += 1
    return n


def psutil_names(proc: Path) -> int:
    psutil.PROCFS_PATH = str(proc)
    return sum(1 for _ in psutil.process_iter(["name"]))


def measure(steps: list[Callable[[], object]], runs: int) -> list[list[float]]:
    """Milliseconds of each step over `runs` rounds, after a warm-up round. The steps take
    turns within a round, so that a busy moment of the machine does not fall on one alone."""
    times: list[list[float]] = [[] for _ in steps]
    for round_number in range(runs + 1):
        for fn, out in zip(steps, times):
            start = time.perf_counter()
            fn()
            if round_number:
                out.append((time.perf_counter() - start) * 1000)
    return times


def percentile(sorted_times: list[float], fraction: float) -> float:
    return sorted_times[min(len(sorted_times) - 1, round(fraction * len(sorted_times)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=10_000)
    p.add_argument("--vms", type=int, default=200)
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        proc = write_compute_node(Path(tmp), args.processes, args.vms)
        pattern = re.compile(QEMU_PATTERN)
        names = read_process_names(proc)
        collectors, sources = exporter_collectors(proc)
        context = scrape_context(sources, process_name_cache(pattern))
        scraper = Scraper(collectors, context, Notices(), RUN_LAST)
        cache: ProcessNameCache = process_name_cache(pattern)

        def first_scrape() -> bytes:  # no names known yet
            return process_table_body(
                collectors, scrape_context(sources, process_name_cache(pattern))
            )

        def whole_body() -> bytes:
            families = scraper.scrape(list(collectors), 10).result()
            return generate_latest(Families(families))  # type: ignore[arg-type]

        steps: list[tuple[str, Callable[[], object]]] = [
            (
                f"floor: open/read/close of {args.processes} comm files",
                lambda: bare_comm_reads(proc),
            ),
            ("psutil.process_iter(['name']) (for comparison)", lambda: psutil_names(proc)),
            ("every process name (read_process_names)", lambda: read_process_names(proc)),
            ("process names of a scrape (ProcessNameCache)", lambda: cache.names(proc)),
            (
                f"per-VM: ksm_stat + cmdline of {args.vms}",
                lambda: read_vm_processes(proc, names, pattern, 200),
            ),
            (
                f"ksmtuned committed: statm of {args.vms}",
                lambda: committed_kb(proc, names, page_size(), FEDORA),
            ),
            (
                "process-table collectors, text format",
                lambda: process_table_body(collectors, context),
            ),
            ("first scrape: process-table collectors, no names yet", first_scrape),
            ("whole /metrics body (the scrape)", whole_body),
        ]
        print(f"{args.processes} processes, {args.vms} VMs, {args.runs} runs; milliseconds\n")
        print(f"| {'step':<52} | {'min':>6} | {'median':>6} | {'p95':>6} |")
        print(f"|{'-' * 54}|{'-' * 8}|{'-' * 8}|{'-' * 8}|")
        for (label, _), times in zip(steps, measure([fn for _, fn in steps], args.runs)):
            times.sort()
            median, p95 = statistics.median(times), percentile(times, 0.95)
            print(f"| {label:<52} | {times[0]:6.1f} | {median:6.1f} | {p95:6.1f} |")


if __name__ == "__main__":
    main()
