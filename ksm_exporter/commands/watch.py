"""`ksm-exporter watch`: a line at each KSM start and stop, like checkKSM_start_time.sh
(byte for byte); with --explain, who made the change and ksmtuned's figures after it."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TextIO

from ksm_exporter.model.derived import is_running
from ksm_exporter.model.edge_cause import Cause, EdgeContext, explanation
from ksm_exporter.model.terminal_text import shown
from ksm_exporter.model.watch_format import watch_line, watch_message
from ksm_exporter.readers import Paths
from ksm_exporter.readers.edge_inputs import edge_explainer
from ksm_exporter.readers.meminfo import MemInfo, read_meminfo
from ksm_exporter.readers.sysfs_ksm import read_ksm
from ksm_exporter.state.bounded_reads import BoundedExplainer


def watch(
    paths: Paths,
    interval: float,
    out: TextIO,
    stop: threading.Event,
    explain: Callable[[int, MemInfo | None], EdgeContext | None] | None = None,
) -> None:
    """`explain` (--explain): who made each change (None: not known), appended to the
    script's line."""
    # Like the script, start from "not running": a line at once only if KSM already runs.
    running = False
    first_look = True
    while not stop.is_set():
        reading = read_ksm(paths.ksm_dir, only=("run",))
        run = reading.values.get("run")
        if run is not None and is_running(run) != running:
            running = not running
            mem: MemInfo | None
            try:
                mem = read_meminfo(paths.procfs)
            except (OSError, ValueError):
                mem = None
            what = "running" if running else "not running"
            line = watch_line(
                time.time(),
                watch_message(what, mem.used if mem else None, mem.free if mem else None),
            )
            if explain is not None:
                context = explain(run, mem) or EdgeContext(Cause.UNKNOWN)
                if first_look:  # running before we looked: who started it is not known
                    context = replace(context, cause=Cause.UNKNOWN, controller=None)
                # A controller's name: escaped.
                line += " " + shown(explanation(context, mem.total if mem else None))
            out.write(line + "\n")
            out.flush()  # often piped into a log file: every line out at once
        if run is not None:
            first_look = False
        stop.wait(interval)


def run(args: argparse.Namespace) -> int:
    paths = Paths(args.sysfs, args.procfs)
    if not (paths.ksm_dir / "run").is_file():
        print(
            f"ksm-exporter: KSM is not available: {paths.ksm_dir}/run does not exist",
            file=sys.stderr,
        )
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        explain = None
        if args.explain:
            # In a thread, waited for a bounded time: a hung /proc read leaves that edge's
            # cause unknown, and the next edges are still printed.
            explain = BoundedExplainer(edge_explainer(paths.procfs, args.ksmtuned_config))
        watch(paths, args.watch_interval, sys.stdout, stop, explain)
    except BrokenPipeError:  # `watch | head`: the reader left
        return 0
    return 0
