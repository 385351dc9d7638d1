"""The collectors by name: what --collector.NAME / --no-collector.NAME and
/metrics?collect[]=NAME select, in the order their series appear."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.registry import Collector

from ksm_exporter.collectors.exporter import ExporterCollector
from ksm_exporter.collectors.ksm import KsmCollector
from ksm_exporter.collectors.ksmd import KsmdCollector
from ksm_exporter.collectors.ksmtuned import OPTIONS as KSMTUNED_OPTIONS
from ksm_exporter.collectors.ksmtuned import KsmtunedCollector
from ksm_exporter.collectors.memory import MemoryCollector
from ksm_exporter.collectors.process import OPTIONS as PROCESS_OPTIONS
from ksm_exporter.collectors.process import VmProcessCollector
from ksm_exporter.collectors.process_names import ProcessNameCache
from ksm_exporter.collectors.settle import OPTIONS as SETTLE_OPTIONS
from ksm_exporter.collectors.settle import SettleCollector
from ksm_exporter.collectors.source import ScrapeContext, SourceCollector
from ksm_exporter.collectors.transitions import TransitionsCollector
from ksm_exporter.collectors.vmstat import VmstatCollector
from ksm_exporter.model.flag_types import Option
from ksm_exporter.readers import Paths
from ksm_exporter.readers.ksmd import KSMD
from ksm_exporter.readers.ksmtuned import KSMTUNED_NAME, KSMTUNED_QEMU, PROXMOX_QEMU_NAME
from ksm_exporter.state.read_errors import ProcessReadErrors, ReadErrors
from ksm_exporter.state.settle import SettleTracker
from ksm_exporter.state.state_file import StateFile
from ksm_exporter.state.transitions import TransitionTracker


@dataclass(frozen=True)
class Sources:
    """Everything the collectors are built from."""

    paths: Paths
    page_size: int
    read_errors: ReadErrors
    process_errors: ProcessReadErrors
    tracker: TransitionTracker
    settle: SettleTracker
    state_file: StateFile | None
    process_pattern: re.Pattern[str]
    process_max: int
    ksmtuned_config: Path
    # The exporter's own process and HTTP metrics, assembled by the daemon
    # (daemon/own_metrics.py); none with --web.disable-exporter-metrics.
    own_metrics: tuple[Collector, ...] = ()


@dataclass(frozen=True)
class CollectorInfo:
    name: str
    default: bool  # on unless --no-collector.NAME
    help: str
    build: Callable[[Sources], SourceCollector]
    # Its --collector.NAME.OPTION flags, declared in the collector's module.
    options: tuple[Option, ...] = ()


COLLECTORS: tuple[CollectorInfo, ...] = (
    CollectorInfo(
        "ksm",
        True,
        "every file of /sys/kernel/mm/ksm and what follows from them (ksm_up, ksm_saved_bytes...)",
        lambda s: KsmCollector(s.paths.ksm_dir, s.page_size, s.read_errors),
    ),
    CollectorInfo(
        "memory", True, "memory now from /proc/meminfo (ksm_memory_*)", lambda s: MemoryCollector()
    ),
    CollectorInfo(
        "transitions",
        True,
        "changes of the run state the watcher saw (ksm_run_transitions_total, "
        "ksm_last_transition_*)",
        lambda s: TransitionsCollector(s.tracker),
    ),
    CollectorInfo(
        "settle",
        True,
        "whether merging has settled (ksm_settled, ksm_settle_duration_seconds)",
        lambda s: SettleCollector(s.settle),
        SETTLE_OPTIONS,
    ),
    CollectorInfo(
        "process",
        True,
        "KSM per matching process (ksm_process_*)",
        lambda s: VmProcessCollector(s.process_pattern, s.process_max, s.process_errors),
        PROCESS_OPTIONS,
    ),
    CollectorInfo(
        "ksmd",
        True,
        "CPU time of the ksmd kernel thread (ksm_ksmd_cpu_seconds_total)",
        lambda s: KsmdCollector(s.read_errors),
    ),
    CollectorInfo(
        "vmstat",
        True,
        "KSM's copy-on-write counters from /proc/vmstat (ksm_cow_breaks_total ...)",
        lambda s: VmstatCollector(s.read_errors),
    ),
    CollectorInfo(
        "ksmtuned",
        True,
        "the inputs of ksmtuned's decision (ksmtuned_*)",
        lambda s: KsmtunedCollector(s.ksmtuned_config, s.page_size, s.read_errors),
        KSMTUNED_OPTIONS,
    ),
    CollectorInfo(
        "exporter",
        True,
        "the exporter itself (ksm_exporter_*, and process_*, python_* unless "
        "--web.disable-exporter-metrics)",
        lambda s: ExporterCollector(s.read_errors, s.state_file, s.own_metrics),
    ),
)

BY_NAME = {c.name: c for c in COLLECTORS}

# Started after the others of a scrape: its read error counters then include the reads of
# the same scrape, so that one exposition tells one consistent story.
RUN_LAST = frozenset({"exporter"})


def build_collectors(enabled: Iterable[str], sources: Sources) -> dict[str, SourceCollector]:
    """name -> collector for the enabled names, in registry order."""
    wanted = set(enabled)
    return {c.name: c.build(sources) for c in COLLECTORS if c.name in wanted}


def process_name_cache(pattern: re.Pattern[str] | None) -> ProcessNameCache:
    """The cache of process names the process, ksmd and ksmtuned collectors share: the
    names they report on are checked at every scrape."""

    def matters(name: str) -> bool:
        return (
            name in (KSMD, KSMTUNED_NAME, PROXMOX_QEMU_NAME)
            or KSMTUNED_QEMU.search(name) is not None
            or (pattern is not None and pattern.search(name) is not None)
        )

    return ProcessNameCache(matters)


def scrape_context(sources: Sources, names: ProcessNameCache) -> Callable[[], ScrapeContext]:
    """A new context for each scrape."""
    return lambda: ScrapeContext(sources.paths.procfs, names, sources.read_errors)
