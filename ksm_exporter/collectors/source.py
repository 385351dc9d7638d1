"""What every collector is, and what the collectors of one scrape share.

A collector reads its source once per scrape (through readers/) into an immutable value
and renders it with pure functions. It runs in a pool thread, under the scrape's deadline
(daemon/scrape.py); it changes no state but the counters of its own failed reads
(state/read_errors.py). What it has to say beyond its families (the VMs it read) it
returns in Collected, for the scraper to publish."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from prometheus_client.core import Metric

from ksm_exporter.collectors.process_names import ProcessNameCache
from ksm_exporter.readers import describe_error
from ksm_exporter.readers.meminfo import MEMINFO, MemInfo, read_meminfo
from ksm_exporter.readers.processes import ProcessNames
from ksm_exporter.readers.vm_processes import VmProcess
from ksm_exporter.state.read_errors import ReadErrors

# The label of ksm_exporter_read_errors_total{file} for listing the processes.
PROC = "proc"

HIDDEN = (
    "/proc hides other users' processes (pid 1 is not visible: a hidepid= mount option, or "
    "systemd's ProtectProc=invisible)"
)


@dataclass(frozen=True)
class Collected:
    """A collector's families for one scrape. `missing` says why (part of) its source could
    not be observed: the series that depend on it are left out, never reported as 0, and
    ksm_scrape_collector_success{collector} is 0."""

    families: tuple[Metric, ...]
    missing: str | None = None
    # The process collector's VMs, for the landing page (the scraper keeps the latest).
    vms: tuple[VmProcess, ...] | None = None


class SourceCollector(Protocol):
    def collect(self, ctx: ScrapeContext) -> Collected: ...


T = TypeVar("T")


class Once(Generic[T]):
    """A value computed by the first caller; the others wait for it."""

    def __init__(self, compute: Callable[[], T]) -> None:
        self._compute = compute
        self._lock = threading.Lock()
        self._done = False
        self._value: T | None = None

    def get(self) -> T:
        with self._lock:
            if not self._done:
                self._value = self._compute()
                self._done = True
            return self._value  # type: ignore[return-value]


class ScrapeContext:
    """The reads several collectors of one scrape share, each done at most once per scrape:
    the process table (process, ksmd, ksmtuned: naming every process is most of a
    scrape's work) and meminfo (memory, ksmtuned: one moment per exposition)."""

    def __init__(self, procfs: Path, names: ProcessNameCache, read_errors: ReadErrors) -> None:
        self.procfs = procfs
        self._read_errors = read_errors
        self._names = Once(lambda: self._read_names(names))
        self._meminfo = Once(self._read_meminfo)

    def process_names(self) -> ProcessNames:
        return self._names.get()

    def meminfo(self) -> MemInfo | str:
        """The memory figures, or why they could not be read."""
        return self._meminfo.get()

    def _read_names(self, cache: ProcessNameCache) -> ProcessNames:
        names = cache.names(self.procfs)
        errors = {PROC: names.error} if names.error is not None else {}
        self._read_errors.scrape_read({PROC}, errors)
        return names

    def _read_meminfo(self) -> MemInfo | str:
        try:
            memory: MemInfo | str = read_meminfo(self.procfs)
        except (OSError, ValueError) as e:
            memory = describe_error(e)
        errors = {MEMINFO: memory} if isinstance(memory, str) else {}
        self._read_errors.scrape_read({MEMINFO}, errors)
        return memory


def process_table_missing(names: ProcessNames) -> str | None:
    """Why the process table does not show every process, or None when it does."""
    if names.error is not None:
        return f"cannot list processes: {names.error}"
    if names.others_hidden:
        return HIDDEN
    return None
