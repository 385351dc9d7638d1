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
of each one written; all are put back at the end, also on error or interrupt
(restore.py). The readings and what is printed from them are in readings.py, the step
and progress lines in reporter.py.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ksm_exporter.experiment.ksm_settings import LOCK_PATH, KsmSettings, exclusive_ksm
from ksm_exporter.experiment.matrix import Matrix
from ksm_exporter.experiment.plot import Mark, Point
from ksm_exporter.experiment.readings import (
    ExperimentError,
    Reading,
    make_matrix,
    status_line,
    take_reading,
)
from ksm_exporter.experiment.reporter import Reporter
from ksm_exporter.experiment.restore import put_back, signals_held
from ksm_exporter.experiment.services import KsmServices, ksmtuned_pids
from ksm_exporter.experiment.settle_wait import IdleKsmd, idle_after
from ksm_exporter.experiment.workload import Workload, WorkloadSpec
from ksm_exporter.model.derived import MIB, is_running, page_size, saved_bytes
from ksm_exporter.readers import Paths
from ksm_exporter.state.settle import DEFAULT_FULL_SCANS, SettleTracker


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


@dataclass
class Result:
    disabled: Matrix
    enabled: Matrix
    points: list[Point] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)


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
            marks.append(Mark(settle_seconds, "settled"))

        rep.step(6, "KSM status and memory usage")
        rep.info(status_line(self.read(), self.page))

        if workload is not None:
            rep.step(7, "run the PRNG in all workload processes and wait until they complete")
            marks.append(Mark(time.monotonic() - self.ksm_start, "PRNG"))
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
                failures = put_back(run.settings, run.services, rep)
        if failures:
            raise ExperimentError("; ".join(failures))
        return result
