"""`ksm-exporter experiment`: a manual KSM test flow as one command.

Everything that can refuse (plot library, rights, memory, confirmation) refuses before
anything on the node is touched; see docs/experiment.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import NamedTuple, TextIO

from ksm_exporter.experiment.flow import Options, Result, run_experiment
from ksm_exporter.experiment.ksm_settings import KsmUnavailable, check_writable
from ksm_exporter.experiment.matrix import matrices_json, matrices_table
from ksm_exporter.experiment.plot import PlotUnavailable, require_matplotlib, write_plot
from ksm_exporter.experiment.reporter import Reporter
from ksm_exporter.experiment.restore import STOP_SIGNALS
from ksm_exporter.experiment.workload import WorkloadSpec
from ksm_exporter.model.derived import mebibytes, page_size, saved_bytes
from ksm_exporter.readers import Paths
from ksm_exporter.readers.meminfo import read_meminfo
from ksm_exporter.readers.sysfs_ksm import read_ksm

# Use at most this much of MemAvailable: the node's guests keep running during the test.
MEMORY_HEADROOM = 0.9


class Interrupted(BaseException):
    """A stop signal; BaseException so that no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, _frame: object) -> None:
    # The cleanup (ending the workload, restoring settings) must not be cut short by a
    # second Ctrl-C.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def _fail(message: str) -> int:
    print(f"ksm-exporter experiment: {message}", file=sys.stderr)
    return 1


def check_rights(sysfs: Path, euid: int | None = None) -> str | None:
    """Why this user cannot run the experiment, or None."""
    if (os.geteuid() if euid is None else euid) != 0:
        return "must be run as root (it writes /sys/kernel/mm/ksm and /proc/sys/vm/drop_caches)"
    try:
        check_writable(sysfs)
    except KsmUnavailable as e:
        return str(e)
    return None


class MemoryNeeded(NamedTuple):
    unmerge: int  # bytes unmerging gives back to the guests
    workload: int  # bytes the workload processes take
    available: int  # MemAvailable (MemFree before Linux 3.14)


def memory_needed(paths: Paths, spec: WorkloadSpec | None) -> MemoryNeeded:
    ksm = read_ksm(paths.ksm_dir, only=("pages_sharing",))
    unmerge = saved_bytes(ksm.values.get("pages_sharing", 0), page_size())
    mem = read_meminfo(paths.procfs)
    available = mem.available if mem.available is not None else mem.free
    return MemoryNeeded(unmerge, spec.total_bytes if spec else 0, available)


def plan(opts: Options, unmerge: int) -> str:
    lines = [
        "ksm-exporter experiment will, on this node:",
        f"  - stop KSM and unmerge every merged page ({mebibytes(unmerge)} MB more in use)",
    ]
    if opts.stop_ksmtuned:
        lines.append("  - stop the ksmtuned and ksm services, if active")
    if opts.drop_caches:
        lines.append("  - drop the page cache (echo 3 > /proc/sys/vm/drop_caches)")
    spec = opts.workload
    if spec is not None:
        lines.append(
            f"  - start {spec.processes} workload processes ({spec.describe()}): "
            f"{mebibytes(spec.total_bytes)} MB"
        )
    tuned = [f"{k}={v}" for k, v in opts.tuned.items()]
    lines.append(
        "  - start KSM"
        + (f" with {', '.join(tuned)}" if tuned else "")
        + " and wait until it settles"
    )
    lines.append("and put every KSM setting it changes back afterwards.")
    return "\n".join(lines)


def confirm(text: str, stdin: TextIO, stderr: TextIO) -> bool:
    stderr.write(text + "\nContinue? [y/N] ")
    stderr.flush()
    try:
        answer = stdin.readline()
    except KeyboardInterrupt:
        stderr.write("\n")
        return False
    return answer.strip().lower() in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    spec = None
    if args.workload is not None:
        processes, size = args.workload
        spec = WorkloadSpec(processes, size, args.duplicate)
    if args.plot is not None:
        try:
            require_matplotlib()
        except PlotUnavailable as e:
            return _fail(str(e))
    paths = Paths(args.sysfs, args.procfs)
    why = check_rights(args.sysfs)
    if why is not None:
        return _fail(why)
    try:
        unmerge, load, available = memory_needed(paths, spec)
    except (OSError, ValueError) as e:
        return _fail(f"cannot read memory usage: {e}")
    if unmerge + load > available * MEMORY_HEADROOM:
        return _fail(
            f"not enough memory: unmerging ({mebibytes(unmerge)} MB) and the workload "
            f"({mebibytes(load)} MB) need more than {MEMORY_HEADROOM:.0%} of MemAvailable "
            f"({mebibytes(available)} MB)"
        )
    opts = Options(
        workload=spec,
        pages_to_scan=args.pages_to_scan,
        sleep_millisecs=args.sleep_millisecs,
        timeout=args.timeout,
        settle_scans=args.settle_scans,
        interval=args.interval,
        drop_caches=args.drop_caches,
        stop_ksmtuned=args.stop_ksmtuned,
        sysfs=args.sysfs,
        procfs=args.procfs,
    )
    if not args.yes:
        if not sys.stdin.isatty():
            return _fail("asks for confirmation on a terminal: pass --yes to run without one")
        if not confirm(plan(opts, unmerge), sys.stdin, sys.stderr):
            return _fail("not confirmed: nothing changed")

    # With --json, stdout is the JSON alone; the steps go to stderr.
    log = sys.stderr if args.json else sys.stdout
    rep = Reporter(log)
    previous = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
    try:
        result = run_experiment(opts, rep)
    except Interrupted as e:
        rep.end_progress()
        print(
            f"ksm-exporter experiment: interrupted by {e}: workload ended, KSM settings restored",
            file=sys.stderr,
        )
        return 128 + e.signum
    # ExperimentError, WorkloadError and KsmUnavailable are RuntimeErrors; so is
    # exclusive_ksm's "could not restore".
    except (RuntimeError, OSError) as e:
        rep.end_progress()
        return _fail(str(e))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return output(args, spec, result, log)


def output(args: argparse.Namespace, spec: WorkloadSpec | None, result: Result, log: TextIO) -> int:
    if args.json:
        print(json.dumps(matrices_json(result.disabled, result.enabled), indent=2))
    else:
        print()
        print(matrices_table(result.disabled, result.enabled))
    if spec is not None:
        log.write(
            f"workload: {mebibytes(spec.expected_saved_bytes)} MB identical across "
            f"processes beyond the first copy (what KSM can save), saved "
            f"{result.enabled.saved_mb} MB\n"
        )
    if result.enabled.settle_seconds is None:
        log.write("warning: KSM did not settle within --timeout: the enabled matrix is early\n")
    if args.plot is not None:
        title = f"KSM experiment, {spec.describe() if spec else 'no workload'}"
        try:
            write_plot(result.points, args.plot, title, result.marks)
        except (OSError, ValueError) as e:
            return _fail(f"cannot write the plot {args.plot}: {e}")
        log.write(f"plot: {args.plot}\n")
    return 0
