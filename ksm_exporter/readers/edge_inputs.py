"""What is read at an edge of `run` to say who made it (model/edge_cause.py): ksmtuned's
inputs as its script computes them, and which controllers' processes are running.

Read only when `run` changed: one walk of the process table, the running ksmtuned's
script (how it counts committed memory), ksmtuned.conf and the memory of the guests it
counts. Its rule unrecognised, or its configuration changed since it started: its inputs
are not known, and the edge's cause is unknown (ksmtuned.py, ksmtuned_rule.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Optional

from ksm_exporter.model.derived import KIB, page_size
from ksm_exporter.model.edge_cause import (
    CONTROLLER_PROCESSES,
    EdgeContext,
    KsmtunedFigures,
    ProcessesSeen,
    explain_edge,
)
from ksm_exporter.readers.ksmtuned import LiveKsmtuned, free_kb, live_ksmtuned, threshold_kb
from ksm_exporter.readers.ksmtuned_conf import KsmtunedConfig, read_ksmtuned_conf
from ksm_exporter.readers.ksmtuned_rule import KsmtunedProcess
from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.readers.processes import ProcessNames, read_process_names

# Who made an edge into `run`, given the memory read with it (edge_explainer).
EdgeExplainer = Callable[[int, Optional[MemInfo]], EdgeContext]


def processes_seen(names: ProcessNames, ksmtuned: KsmtunedProcess | None) -> ProcessesSeen:
    """`ksmtuned`: its live process (find_ksmtuned), None when none is alive."""
    if not names.complete:  # hidden or unlisted: see others_hidden
        return ProcessesSeen(visible=False)
    running = set(names.names.values())
    return ProcessesSeen(
        visible=True,
        ksmtuned_running=ksmtuned is not None,
        controllers=tuple(c for name, c in CONTROLLER_PROCESSES.items() if name in running),
    )


def read_edge_config(path: Path) -> KsmtunedConfig | None:
    """ksmtuned.conf, or None when it is absent or unreadable (read_ksmtuned_conf). A
    wrong value keeps its default, as the scrape's ksmtuned_* gauges do (and report)."""
    try:
        found = read_ksmtuned_conf(path)
    except OSError:
        return None
    return None if found is None else found[0]


def ksmtuned_figures(
    live: LiveKsmtuned | None, config: KsmtunedConfig | None, memory: MemInfo | None
) -> KsmtunedFigures:
    """`live`: the live ksmtuned; None when none runs (or the table is hidden): no script,
    so no committed memory (and its decision does not matter, or is not known), and the
    threshold is the file's (`config`)."""
    total = None if memory is None else memory.total // KIB
    if live is not None:
        config = live.config  # None when the file changed since ksmtuned started
    return KsmtunedFigures(
        total_kb=total,
        threshold_kb=None if total is None or config is None else threshold_kb(total, config),
        committed_kb=None if live is None else live.committed_kb,
        free_kb=None if memory is None else free_kb(memory),
    )


def edge_context(
    procfs: Path, ksmtuned_config: Path, page_size: int, run: int, memory: MemInfo | None
) -> EdgeContext:
    """Who made the edge into `run`, from the process table, the running ksmtuned's script,
    ksmtuned.conf and `memory` (meminfo as read at the edge; None when it could not be
    read)."""
    names = read_process_names(procfs)
    config = read_edge_config(ksmtuned_config)
    live = (
        live_ksmtuned(procfs, names, ksmtuned_config, config, page_size) if names.complete else None
    )
    seen = processes_seen(names, None if live is None else live.process)
    return explain_edge(run, ksmtuned_figures(live, config, memory), seen)


def edge_explainer(procfs: Path, ksmtuned_config: Path) -> EdgeExplainer:
    """edge_context for this /proc and ksmtuned.conf, at this machine's page size."""
    return partial(edge_context, procfs, ksmtuned_config, page_size())
