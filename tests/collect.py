"""Run collectors in the test's own thread, as one scrape, without the daemon."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.core import Metric

from ksm_exporter.collectors.process_names import ProcessNameCache
from ksm_exporter.collectors.registry import process_name_cache
from ksm_exporter.collectors.source import Collected, ScrapeContext, SourceCollector
from ksm_exporter.state.notices import Notices
from ksm_exporter.state.read_errors import ReadErrors

from .support import parse_samples


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

    def scrape(self) -> dict[str, float]:
        ctx = self.context()
        self.last = {name: c.collect(ctx) for name, c in self.collectors.items()}
        families = [f for collected in self.last.values() for f in collected.families]
        return parse_samples(generate_latest(Families(families)).decode())  # type: ignore[arg-type]


def new_read_errors() -> ReadErrors:
    return ReadErrors(Notices())


def with_pattern(scrapes: Scrapes, pattern: re.Pattern[str] | None) -> Scrapes:
    scrapes.names = process_name_cache(pattern)
    return scrapes
