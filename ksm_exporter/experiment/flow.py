"""The manual KSM test flow, steps 1-8 (stop, unmerge, drop caches, measure, start,
settle, load, measure), run and printed in order.

    0. (--workload) start the workload processes: the stand-in for the node's guests
    1. stop KSM (`service ksm stop`; ksmtuned too with --stop-ksmtuned)
    2. release merged pages (echo 2 > run)
    3. drop caches (echo 3 > /proc/sys/vm/drop_caches)
    4. free -m                                           -> matrix 1, KSM disabled
    5. start KSM and wait until pages_sharing is stable (progress display, --timeout)
    6. KSM status and memory usage
    7. the PRNG in the "guests": each workload process rewrites its random part
    8. KSM status and memory usage                       -> matrix 2, KSM enabled

Every KSM setting goes through exclusive_ksm's KsmSettings, which records the first value
of each one written; all are put back at the end, also on error or interrupt.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ksm_exporter.experiment.ksm_settings import LOCK_PATH, KsmSettings, exclusive_ksm
from ksm_exporter.experiment.matrix import Matrix
from ksm_exporter.experiment.plot import Point
from ksm_exporter.experiment.services import KsmServices, ksmtuned_pids
from ksm_exporter.experiment.settle_wait import IdleKsmd, idle_after
from ksm_exporter.experiment.workload import Workload, WorkloadSpec
from ksm_exporter.model.derived import (
    MIB,
    awk_number,
    is_running,
    mebibytes,
    page_size,
    saved_bytes,
    sharing_ratio,
)
from ksm_exporter.readers import Paths
from ksm_exporter.readers.ksmd import clock_ticks, cpu_seconds, read_ksmd_stat
from ksm_exporter.readers.meminfo import MemInfo, read_meminfo
from ksm_exporter.readers.processes import read_process_names
from ksm_exporter.readers.sysfs_ksm import read_ksm
from ksm_exporter.state.settle import DEFAULT_FULL_SCANS, SettleTracker

STEPS = 8
# Ctrl-C, kill, and a closed terminal: each ends the run through the cleanup.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SAMPLED = ("run", "full_scans", "pages_sharing", "pages_shared", "general_profit", "pages_scanned")


class ExperimentError(RuntimeError):
    """The run cannot go on; the message is one line for the operator."""


@dataclass(frozen=True)
class Options:
    workload: WorkloadSpec | None
    pages_to_scan: int | None = None  # None: leave the node's value
    sleep_millisecs: int | None = None
    timeout: float = 600.0
    settle_scans: int = DEFAULT_FULL_SCANS
    interval: float = 0.5
    drop_caches: bool = True
    stop_ksmtuned: bool = False
    sysfs: Path = Path("/sys")
    procfs: Path = Path("/proc")

    @property
    def tuned(self) -> dict[str, int]:
        """The KSM speed settings given for the run, by name; the node's own otherwise."""
        given = {"pages_to_scan": self.pages_to_scan, "sleep_millisecs": self.sleep_millisecs}
        return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True)
class Reading:
    at: float  # time.monotonic()
    run: int
    full_scans: int
    pages_sharing: int
    pages_shared: int
    general_profit: int | None
    pages_scanned: int | None  # absent on older kernels
    mem: MemInfo
    ksmd_cpu: float | None


@dataclass
class Result:
    disabled: Matrix
    enabled: Matrix
    points: list[Point] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)


class Reporter:
    """Step lines, and the progress line while KSM settles: rewritten in place on a
    terminal, one line every few seconds into a pipe or a log."""

    PIPE_EVERY = 5.0

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._open = False
        self._last = 0.0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def step(self, n: int, text: str) -> None:
        self.end_progress()
        self._write(f"step {n}/{STEPS}: {text}\n")

    def info(self, text: str) -> None:
        self.end_progress()
        self._write(f"  {text}\n")

    def progress(self, pages_sharing: int, full_scans: int, elapsed: float) -> None:
        line = f"  pages_sharing {pages_sharing}  full scans {full_scans}  elapsed {elapsed:.1f}s"
        if self.tty:
            self._write(f"\r\x1b[K{line}")
            self._open = True
        elif time.monotonic() - self._last >= self.PIPE_EVERY:
            self._write(line + "\n")
            self._last = time.monotonic()

    def end_progress(self) -> None:
        if self._open:
            self._write("\n")
            self._open = False


def ksmd_cpu_seconds(procfs: Path) -> float | None:
    """utime + stime of the ksmd kernel thread, read as the daemon reads it; None without
    ksmd or when its stat cannot be read (the matrix then shows `-`)."""
    try:
        stat = read_ksmd_stat(procfs, read_process_names(procfs))
    except (OSError, ValueError):
        return None
    return None if stat is None else cpu_seconds(stat, clock_ticks())


def take_reading(paths: Paths) -> Reading:
    ksm = read_ksm(paths.ksm_dir, only=_SAMPLED)
    missing = [n for n in _SAMPLED[:4] if n not in ksm.values]
    if not ksm.present or missing:
        why = "; ".join(f"{n}: {ksm.errors.get(n, 'missing')}" for n in missing)
        raise ExperimentError(f"cannot read {paths.ksm_dir}: {why or 'absent'}")
    try:
        mem = read_meminfo(paths.procfs)
    except (OSError, ValueError) as e:
        raise ExperimentError(f"cannot read {paths.procfs}/meminfo: {e}") from None
    v = ksm.values
    return Reading(
        at=time.monotonic(),
        run=v["run"],
        full_scans=v["full_scans"],
        pages_sharing=v["pages_sharing"],
        pages_shared=v["pages_shared"],
        general_profit=v.get("general_profit"),
        pages_scanned=v.get("pages_scanned"),
        mem=mem,
        ksmd_cpu=ksmd_cpu_seconds(paths.procfs),
    )


def _cpu_between(first: Reading, last: Reading) -> float | None:
    if first.ksmd_cpu is None or last.ksmd_cpu is None:
        return None
    return round(last.ksmd_cpu - first.ksmd_cpu, 2)


def make_matrix(first: Reading, last: Reading, page: int, settle_seconds: float | None) -> Matrix:
    """The matrix of the phase from `first` to `last`, its state as of `last`."""
    return Matrix(
        used_mb=mebibytes(last.mem.used),
        free_mb=mebibytes(last.mem.free),
        saved_mb=mebibytes(saved_bytes(last.pages_sharing, page)),
        sharing_rate=sharing_ratio(last.pages_sharing, last.pages_shared),
        general_profit_bytes=last.general_profit,
        full_scans=last.full_scans - first.full_scans,
        settle_seconds=settle_seconds,
        ksmd_cpu_seconds=_cpu_between(first, last),
    )


def status_line(r: Reading, page: int) -> str:
    """checkKSM_pages_info.sh's key figures and `free -m`'s, on one line."""
    rate = awk_number(sharing_ratio(r.pages_sharing, r.pages_shared))
    return (
        f"KSM saved: {mebibytes(saved_bytes(r.pages_sharing, page))} MB, "
        f"Sharing_Rate: {rate}, Pages_Sharing: {r.pages_sharing}, "
        f"Pages_Shared: {r.pages_shared}, Full_Scans: {r.full_scans}; "
        f"{mebibytes(r.mem.used)} MB used, {mebibytes(r.mem.free)} MB free"
    )


def describe_settings(values: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items()) or "none"


class _Run:
    """One experiment: the steps, with the readings kept for the matrices and the plot."""

    def __init__(self, opts: Options, rep: Reporter, settings: KsmSettings) -> None:
        self.opts = opts
        self.rep = rep
        self.settings = settings
        self.paths = Paths(opts.sysfs, opts.procfs)
        self.page = page_size()
        self.services = KsmServices()
        self.points: list[Point] = []
        self.ksm_start = 0.0

    def read(self) -> Reading:
        r = take_reading(self.paths)
        if self.ksm_start:
            self.points.append(
                Point(
                    r.at - self.ksm_start,
                    r.pages_sharing,
                    saved_bytes(r.pages_sharing, self.page) / MIB,
                )
            )
        return r

    def write(self, name: str, value: int) -> None:
        try:
            self.settings.write(name, value)
        except OSError as e:
            why = e.strerror or str(e)
            if name == "pages_to_scan" and self._advisor() == "scan-time":
                why += " (advisor_mode is scan-time: the advisor sets pages_to_scan itself)"
            raise ExperimentError(f"cannot set {name}={value}: {why}") from None

    def _advisor(self) -> str | None:
        try:
            return self.settings.read("advisor_mode")
        except (OSError, ValueError):
            return None  # no advisor on this kernel

    def steps(self, workload: Workload | None) -> Result:
        opts, rep = self.opts, self.rep
        if workload is not None:
            rep.step(0, f"start the workload: {workload.spec.describe()}")
            workload.start()
            rep.info(f"pids {' '.join(map(str, workload.pids))}")

        first = self.read()
        rep.step(1, f"stop KSM (echo 0 > run; run was {first.run})")
        self.stop_services()
        self.write("run", 0)

        rep.step(2, f"release merged pages (echo 2 > run; pages_sharing {first.pages_sharing})")
        self.write("run", 2)
        # Unmerging also zeroes full_scans: the disabled phase is counted from here.
        unmerged = self.read()
        rep.info(f"pages_sharing now {unmerged.pages_sharing}")

        drop = opts.procfs / "sys/vm/drop_caches"
        if opts.drop_caches:
            rep.step(3, f"clear memory cache (sync; echo 3 > {drop})")
            os.sync()  # drop_caches frees clean pages only: write dirty ones out first
            try:
                drop.write_text("3\n")
            except OSError as e:
                raise ExperimentError(f"cannot write {drop}: {e.strerror or e}") from None
        else:
            rep.step(3, "clear memory cache: skipped (--no-drop-caches)")

        off = self.read()
        disabled = make_matrix(unmerged, off, self.page, None)
        rep.step(4, f"free -m: {disabled.used_mb} MB used, {disabled.free_mb} MB free")

        changes = opts.tuned
        rep.step(
            5,
            "start KSM (echo 1 > run"
            + "".join(f"; {k}={v}" for k, v in changes.items())
            + ") and wait until pages_sharing is stable",
        )
        for name, value in changes.items():
            self.write(name, value)
        self.ksm_start = time.monotonic()
        self.write("run", 1)
        start = self.read()
        settle_seconds = self.wait_settled(start)
        marks = []
        if settle_seconds is not None:
            marks.append((settle_seconds, "settled"))

        rep.step(6, "KSM status and memory usage")
        rep.info(status_line(self.read(), self.page))

        if workload is not None:
            rep.step(7, "run the PRNG in all workload processes and wait until they complete")
            marks.append((time.monotonic() - self.ksm_start, "PRNG"))
            workload.prng_pass()
        else:
            rep.step(7, "run the PRNG in the VMs: skipped (--no-workload)")

        last = self.read()
        enabled = make_matrix(start, last, self.page, settle_seconds)
        rep.step(8, "KSM status and memory usage")
        rep.info(status_line(last, self.page))
        return Result(disabled, enabled, self.points, marks)

    def stop_services(self) -> None:
        if self.opts.stop_ksmtuned:
            if not self.services.systemd:
                self.rep.info("no systemd here: no ksm or ksmtuned service to stop")
            else:
                stopped = self.services.stop()
                self.rep.info(
                    f"stopped: {', '.join(stopped)}" if stopped else "ksm, ksmtuned: not active"
                )
        else:
            active = self.services.active()
            if active:
                self.rep.info(
                    f"warning: {', '.join(active)} active and may change KSM settings during "
                    "the run (--stop-ksmtuned stops them and starts them again afterwards)"
                )
        if not self.services.stopped:
            pids = ksmtuned_pids(self.opts.procfs)
            if pids and not self.services.systemd:
                self.rep.info(
                    f"warning: ksmtuned runs (pid {' '.join(map(str, pids))}) and may "
                    "change KSM settings during the run: stop it first"
                )

    def wait_settled(self, start: Reading) -> float | None:
        """Seconds from KSM start until the daemon's settle rule (ksm_exporter.state.settle)
        holds, or ksmd is idle; None after --timeout."""
        tracker = SettleTracker(full_scans=self.opts.settle_scans)
        idle = IdleKsmd(idle_after(int(self.settings.read("sleep_millisecs"))))
        r = start
        while True:
            elapsed = r.at - self.ksm_start
            if not is_running(r.run):
                raise ExperimentError(
                    f"KSM was switched off during the run (run={r.run}): "
                    "is ksmtuned or another tool managing KSM? (see --stop-ksmtuned)"
                )
            tracker.observe(r.at, r.run, r.full_scans, r.pages_sharing)
            self.rep.progress(r.pages_sharing, r.full_scans - start.full_scans, elapsed)
            if tracker.state().settled:
                self.rep.info(
                    f"settled: pages_sharing {r.pages_sharing} after "
                    f"{r.full_scans - start.full_scans} full scans, {elapsed:.1f}s"
                )
                return round(elapsed, 2)
            if idle.observe(r.at, r.pages_scanned, r.full_scans):
                self.rep.info(
                    f"settled: ksmd is idle after {elapsed:.1f}s (pages_scanned stopped "
                    f"moving): no memory is marked mergeable, pages_sharing {r.pages_sharing}"
                )
                return round(elapsed, 2)
            if elapsed >= self.opts.timeout:
                self.rep.info(
                    f"not settled within --timeout {self.opts.timeout:g}s "
                    f"(pages_sharing {r.pages_sharing}); measuring anyway"
                )
                return None
            time.sleep(min(self.opts.interval, max(0.0, self.opts.timeout - elapsed)))
            r = self.read()


def run_experiment(opts: Options, rep: Reporter) -> Result:
    """Steps 0-8 under the KSM lock; the workload is ended and every KSM setting (and any
    service stopped) is put back before this returns or raises."""
    busy = f"waiting for {LOCK_PATH}: another experiment or real-KSM test runs"
    with exclusive_ksm(opts.sysfs, on_wait=lambda: rep.info(busy)) as settings:
        run = _Run(opts, rep, settings)
        workload = Workload(opts.workload) if opts.workload else None
        try:
            result = run.steps(workload)
        finally:
            with signals_held():
                if workload is not None:
                    workload.stop()
                failures = _put_back(run, rep)
        if failures:
            raise ExperimentError("; ".join(failures))
        return result


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold back stop signals while cleaning up: a Ctrl-C there would leave settings
    half restored. One that arrives is delivered afterwards."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _put_back(run: _Run, rep: Reporter) -> list[str]:
    """Restore KSM settings, then the services (ksm.service writes run itself); return a
    message per failure."""
    restored = describe_settings(run.settings.saved)
    failures = run.settings.restore() + run.services.restore()
    rep.end_progress()
    rep.info(f"restored: {restored}")
    for failure in failures:
        rep.info(f"error: {failure}")
    return failures
