"""The exporter's own process_* and python_* metrics, as Family tuples.

The same names, help texts and values as prometheus-client's ProcessCollector,
PlatformCollector and GCCollector (tests/test_exposition_text.py compares them), written
here so that serving /metrics does not import prometheus-client (see text.py). Always the
real /proc/self, whatever --path.procfs says: these describe the exporter.
"""

from __future__ import annotations

import gc
import os
import platform
from collections.abc import Iterator

from .text import Family, counter, gauge

PAGE_SIZE = os.sysconf("SC_PAGESIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


class ProcessMetrics:
    def __init__(self) -> None:
        self.btime = _boot_time()

    def families(self) -> Iterator[Family]:
        try:
            with open("/proc/self/stat", "rb") as f:
                parts = f.read().split(b")")[-1].split()
        except OSError:
            parts = None
        if parts is not None:
            yield gauge(
                "process_virtual_memory_bytes", "Virtual memory size in bytes.", float(parts[20])
            )
            yield gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                float(parts[21]) * PAGE_SIZE,
            )
            yield gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                float(parts[19]) / TICKS + self.btime,
            )
            yield counter(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                float(parts[11]) / TICKS + float(parts[12]) / TICKS,
            )
        try:
            max_fds = None
            with open("/proc/self/limits", "rb") as f:
                for line in f:
                    if line.startswith(b"Max open file"):
                        max_fds = float(line.split()[3])
                        break
            open_fds = len(os.listdir("/proc/self/fd"))
        except OSError:
            return
        yield gauge("process_open_fds", "Number of open file descriptors.", open_fds)
        if max_fds is not None:
            yield gauge("process_max_fds", "Maximum number of open file descriptors.", max_fds)


class PlatformMetrics:
    def __init__(self) -> None:
        major, minor, patchlevel = platform.python_version_tuple()
        info = {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "major": major,
            "minor": minor,
            "patchlevel": patchlevel,
        }
        self._families = (
            Family(
                "python_info",
                "Python platform information",
                "gauge",
                tuple(info),
                ((tuple(info.values()), 1),),
            ),
        )

    def families(self) -> Iterator[Family]:
        return iter(self._families)


class GcMetrics:
    def families(self) -> Iterator[Family]:
        stats = list(enumerate(gc.get_stats()))
        for name, help, key in (
            ("python_gc_objects_collected", "Objects collected during gc", "collected"),
            (
                "python_gc_objects_uncollectable",
                "Uncollectable objects found during GC",
                "uncollectable",
            ),
            (
                "python_gc_collections",
                "Number of times this generation was collected",
                "collections",
            ),
        ):
            samples = tuple(((str(gen),), stat[key]) for gen, stat in stats)
            yield Family(name, help, "counter", ("generation",), samples)
