"""`ksm-exporter watch`: a line at each KSM start and stop, like checkKSM_start_time.sh."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import TextIO

from ksm_exporter.model.derived import is_running
from ksm_exporter.model.watch_format import watch_line, watch_message
from ksm_exporter.readers import Paths
from ksm_exporter.readers.meminfo import read_meminfo
from ksm_exporter.readers.sysfs_ksm import read_ksm


def watch(paths: Paths, interval: float, out: TextIO, stop: threading.Event) -> None:
    # Like the script, start from "not running": a line at once only if KSM already runs.
    running = False
    while not stop.is_set():
        reading = read_ksm(paths.ksm_dir, only=("run",))
        run = reading.values.get("run")
        if run is not None and is_running(run) != running:
            running = not running
            try:
                mem = read_meminfo(paths.procfs)
                used, free = mem.used, mem.free
            except (OSError, ValueError):
                used = free = None
            what = "running" if running else "not running"
            out.write(watch_line(time.time(), watch_message(what, used, free)) + "\n")
            out.flush()  # often piped into a log file: every line out at once
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
        watch(paths, args.watch_interval, sys.stdout, stop)
    except BrokenPipeError:  # `watch | head`: the reader left
        return 0
    return 0
