"""Run collectors in the test's own thread, as one scrape, without the daemon."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.core import Metric

from ksm_exporter.collectors.exporter import ExporterCollector
from ksm_exporter.collectors.ksm import KsmCollector
from ksm_exporter.collectors.ksmd import KsmdCollector
from ksm_exporter.collectors.ksmtuned import KsmtunedCollector
from ksm_exporter.collectors.memory import MemoryCollector
from ksm_exporter.collectors.process import VmProcessCollector
from ksm_exporter.collectors.process_names import ProcessNameCache
from ksm_exporter.collectors.registry import process_name_cache
from ksm_exporter.collectors.source import Collected, ScrapeContext, SourceCollector
from ksm_exporter.collectors.vmstat import VmstatCollector
from ksm_exporter.model.derived import page_size
from ksm_exporter.readers import Paths
from ksm_exporter.readers.vm_processes import QEMU_PATTERN
from ksm_exporter.state.notices import Notices
from ksm_exporter.state.read_errors import ProcessReadErrors, ReadErrors
from tests.support import FIXTURES, parse_samples


class Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> list[Metric]:
        return self.families


@dataclass
class Scrapes:
    """Collectors over one procfs, scraped again and again like the daemon does."""

    procfs: Path
    collectors: Mapping[str, SourceCollector]
    read_errors: ReadErrors
    names: ProcessNameCache = field(default_factory=lambda: process_name_cache(None))
    last: dict[str, Collected] = field(default_factory=dict)

    def context(self) -> ScrapeContext:
        return ScrapeContext(self.procfs, self.names, self.read_errors)

    def text(self) -> str:
        """One scrape, as the exposition text the daemon would serve."""
        ctx = self.context()
        self.last = {name: c.collect(ctx) for name, c in self.collectors.items()}
        families = [f for collected in self.last.values() for f in collected.families]
        return generate_latest(Families(families)).decode()  # type: ignore[arg-type]

    def scrape(self) -> dict[str, float]:
        return parse_samples(self.text())


def ksm_scrapes(root: Path) -> Scrapes:
    """The ksm, memory and exporter collectors over a fixture tree at `root`."""
    paths = Paths(root / "sys", root / "proc")
    errors = new_read_errors()
    collectors: dict[str, SourceCollector] = {
        "ksm": KsmCollector(paths.ksm_dir, page_size(), errors),
        "memory": MemoryCollector(),
        "exporter": ExporterCollector(errors, None),
    }
    return Scrapes(paths.procfs, collectors, errors)


def new_read_errors() -> ReadErrors:
    return ReadErrors(Notices())


def with_pattern(scrapes: Scrapes, pattern: re.Pattern[str] | None) -> Scrapes:
    scrapes.names = process_name_cache(pattern)
    return scrapes


STOCK_CONF = FIXTURES / "ksmtuned" / "stock.conf"
QEMU = re.compile(QEMU_PATTERN)


def collector(
    proc: Path,
    pattern: re.Pattern[str] | None = QEMU,
    limit: int = 200,
    config: Path = STOCK_CONF,
) -> Scrapes:
    """The process, ksmtuned, ksmd and vmstat collectors (process: unless `pattern` is
    None), sharing one process table per scrape as the daemon's do."""
    errors = new_read_errors()
    collectors: dict[str, SourceCollector] = {}
    if pattern is not None:
        collectors["process"] = VmProcessCollector(pattern, limit, ProcessReadErrors(Notices()))
    collectors["ksmtuned"] = KsmtunedCollector(config, page_size(), errors)
    collectors["ksmd"] = KsmdCollector(errors)
    collectors["vmstat"] = VmstatCollector(errors)
    return with_pattern(Scrapes(proc, collectors, errors), pattern)


def scrape(c: Scrapes) -> dict[str, float]:
    return c.scrape()


def vm_labels(pid: int, vm: str, vmid: str = "", uuid: str = "", namespace: str = "") -> str:
    """A per-VM series' labels as the exposition writes them: sorted, empty ones included."""
    return f'namespace="{namespace}",pid="{pid}",uuid="{uuid}",vm="{vm}",vmid="{vmid}"'
