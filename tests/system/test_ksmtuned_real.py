"""The exporter against the real ksmtuned (Debian's /usr/sbin/ksmtuned) and real guests.

ksmtuned runs with a test configuration bind-mounted over /etc/ksmtuned.conf in a mount
namespace of its own (KSM_MONITOR_INTERVAL=1, DEBUG=1 with its log file, its pid file in
the test's directory), under a parent that reaps only when told, so that a killed ksmtuned
stays a zombie for a while. Free memory is moved across its threshold by allocating and
freeing memory; every edge the exporter records is checked against ksmtuned's DEBUG log
(its committed memory, free memory and threshold at the look that wrote `run`). The guests:
one started by a real libvirtd (`/usr/bin/qemu-system-x86_64 ... -accel tcg`, which
Debian's ksmtuned does not count) and one paused `qemu-system-x86_64 -enable-kvm ... -S`
(which it counts).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ksm_exporter.experiment.ksm_settings import KsmSettings
from ksm_exporter.readers.meminfo import read_meminfo
from ksm_exporter.readers.processes import read_rss_pages
from tests.support import REAL_KSM, RunningExporter, guests, run_exporter, wait_until

KSMTUNED = Path("/usr/sbin/ksmtuned")
CONF = Path("/etc/ksmtuned.conf")
MB = 1024  # kB
DEBIAN_RULE = (
    "ksmtuned_committed_rule_info{rule=\"pgrep -f '^qemu-system.*-enable-kvm' | ps -o rsz=\","
    'script="/usr/sbin/ksmtuned",variant="debian"}'
)
# How far the exporter's free memory may be from ksmtuned's: read up to a poll apart on a
# machine where other tests run (MemFree alone would be off by Buffers + Cached, GBs).
FREE_SLACK_KB = 256 * MB
COMMITTED_SLACK_KB = 4 * MB  # a paused guest's resident memory hardly moves

# The parent of ksmtuned: a child subreaper (the script forks its loop and exits, so the
# loop is reparented here), which reaps its children only on SIGUSR1, and on SIGTERM kills
# and reaps them all before it exits.
PARENT = r"""
import ctypes, os, signal, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
def reap(*_):
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return
def children():
    me = str(os.getpid())
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1] == me:
                yield int(d)
        except OSError:
            pass
def finish(*_):
    for pid in children():
        os.kill(pid, signal.SIGKILL)
    reap()
    sys.exit(0)
signal.signal(signal.SIGUSR1, reap)
signal.signal(signal.SIGTERM, finish)
conf, ksmtuned = sys.argv[1:3]
script = f"mount --make-rprivate / && mount --bind {conf} /etc/ksmtuned.conf && exec {ksmtuned}"
subprocess.run(["unshare", "-m", "sh", "-c", script], check=True)
print("started", flush=True)
while True:
    signal.pause()
"""


@dataclass
class Ksmtuned:
    parent: subprocess.Popen[str]
    conf: Path
    log: Path
    pid_file: Path

    @property
    def pid(self) -> int:
        return int(self.pid_file.read_text())

    def looks(self) -> list[Look]:
        """Each adjustment its DEBUG log shows, in order."""
        return parse_looks(self.log.read_text() if self.log.exists() else "")

    def threshold_kb(self) -> int:
        found = re.search(r": thres (\d+)$", self.log.read_text(), re.M)
        assert found, self.log.read_text()
        return int(found[1])


@dataclass(frozen=True)
class Look:
    committed_kb: int
    free_kb: int
    starts: bool  # its decision: start KSM (else stop it)


# `committed C free F`, then `C+T < total and free > T, stop ksm` or `C+T > total, start ksm`.
LOOK = re.compile(
    r": committed (\d+) free (\d+)\n.*: \d+ [<>] \d+(?: and free > \d+)?, (stop|start) ksm$", re.M
)


def parse_looks(text: str) -> list[Look]:
    return [Look(int(m[1]), int(m[2]), m[3] == "start") for m in LOOK.finditer(text)]


def write_conf(path: Path, tmp: Path, threshold_kb: int) -> None:
    """Looks every second, logs them, keeps its pid file in the test's directory, and a
    threshold of exactly `threshold_kb` (KSM_THRES_COEF=0: KSM_THRES_CONST is the floor)."""
    path.write_text(
        "KSM_MONITOR_INTERVAL=1\n"
        "KSM_THRES_COEF=0\n"
        f"KSM_THRES_CONST={threshold_kb}\n"
        "DEBUG=1\n"
        f"LOGFILE={tmp}/ksmtuned.log\n"
        f"PIDFILE={tmp}/ksmtune.pid\n"
    )


@contextlib.contextmanager
def real_ksmtuned(tmp: Path, threshold_kb: int) -> Iterator[Ksmtuned]:
    conf = tmp / "ksmtuned.conf"
    write_conf(conf, tmp, threshold_kb)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(conf), str(KSMTUNED)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "started\n"
        tuned = Ksmtuned(parent, conf, tmp / "ksmtuned.log", tmp / "ksmtune.pid")
        wait_until(lambda: tuned.looks(), timeout=60, what="ksmtuned's first look")
        yield tuned
    finally:
        parent.send_signal(signal.SIGTERM)
        parent.wait(10)


# Maps `mb` MB populated in one system call (MAP_POPULATE: faulted in by the kernel, not
# page by page), says so, and unmaps them when its stdin closes.
ALLOCATE = """
import mmap, sys
populate = getattr(mmap, "MAP_POPULATE", 0x8000)  # Python 3.10+ names it
flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate
m = mmap.mmap(-1, int(sys.argv[1]) << 20, flags=flags)
print(1, flush=True)
sys.stdin.read()
m.close()
"""


@contextlib.contextmanager
def allocated(mb: int) -> Iterator[None]:
    """`mb` MB of memory taken from free memory at once, given back on exit."""
    child = subprocess.Popen(
        [sys.executable, "-c", ALLOCATE, str(mb)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "1\n"
        yield
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def free_kb() -> int:
    m = read_meminfo(Path("/proc"))
    return (m.free + m.buffers + m.cached) // 1024


def edges(exporter: RunningExporter) -> list[dict[str, object]]:
    return json.loads(exporter.get("/transitions")[1])


def next_edge(exporter: RunningExporter, seen: int, what: str) -> dict[str, object]:
    def more() -> list[dict[str, object]] | None:
        history = edges(exporter)
        return history if len(history) > seen else None

    history = wait_until(more, timeout=60, what=what)
    assert len(history) == seen + 1, history[seen:]
    return history[-1]


def just_after_a_look(tuned: Ksmtuned) -> int:
    """Wait until ksmtuned has just looked (it looks again a second later: a change of
    memory made now is whole by then); the number of looks so far."""
    seen = len(tuned.looks())
    return wait_until(lambda: len(tuned.looks()) > seen and len(tuned.looks()), what="a look")


def check_against_log(
    edge: dict[str, object], tuned: Ksmtuned, threshold_kb: int, since: int
) -> Look:
    """The edge's inputs against those of the look that wrote `run`: the first look, after
    the first `since`, whose decision is the edge's (ksmtuned logs `committed C free F`
    before it writes)."""
    starts = edge["to"] == "running"
    look = next(look for look in tuned.looks()[since:] if look.starts == starts)
    assert edge["ksmtuned_threshold_bytes"] == threshold_kb * 1024
    committed = edge["ksmtuned_committed_bytes"]
    assert isinstance(committed, int)
    assert abs(committed // 1024 - look.committed_kb) <= COMMITTED_SLACK_KB, (edge, look)
    free = edge["ksmtuned_free_bytes"]
    assert isinstance(free, int)
    assert abs(free // 1024 - look.free_kb) <= FREE_SLACK_KB, (edge, look)
    return look


@pytest.mark.kernel
def test_the_exporter_against_the_real_ksmtuned(real_ksm: KsmSettings, tmp_path: Path) -> None:
    if not KSMTUNED.is_file() or not CONF.is_file():
        pytest.skip(f"no {KSMTUNED} / {CONF} (Debian's ksmtuned package)")
    for tool in ("unshare", "pgrep", "ps"):
        if shutil.which(tool) is None:
            pytest.skip(f"no {tool}")
    os.chmod(tmp_path, 0o755)
    # ksmtuned writes run, pages_to_scan and sleep_millisecs: each put back afterwards.
    if (REAL_KSM / "advisor_mode").exists():
        real_ksm.write("advisor_mode", "none")  # else ksmtuned's pages_to_scan is refused
    for name in ("pages_to_scan", "sleep_millisecs"):
        real_ksm.write(name, real_ksm.read(name))
    real_ksm.write("run", 0)
    baseline = guests.pages_sharing()
    with contextlib.ExitStack() as stack:
        try:
            boot = guests.boot_files(tmp_path)
            libvirt = stack.enter_context(
                guests.libvirt_with_guest(tmp_path, boot, "ksm-exporter-test-tuned", 64)
            )
            paused = stack.enter_context(guests.paused_guest(kvm=True))
        except guests.Unavailable as e:
            pytest.skip(str(e))
        libvirt.wait_filled()
        # ksmtuned's threshold 1 GB under the free memory now: 2 GB allocated take free
        # memory 1 GB under it, freed 1 GB over it (room for the other tests' memory).
        threshold = free_kb() - 1024 * MB
        conf = tmp_path / "ksmtuned.conf"
        write_conf(conf, tmp_path, threshold)  # the exporter reads it before ksmtuned starts
        exporter = stack.enter_context(
            run_exporter(None, f"--collector.ksmtuned.config={conf}", tmp=tmp_path)
        )
        tuned = stack.enter_context(real_ksmtuned(tmp_path, threshold))
        assert tuned.threshold_kb() == threshold
        assert not tuned.looks()[0].starts  # plenty free: it keeps KSM stopped (no edge)

        # Its own rule, recognised in its script, and the guests it counts: the paused one
        # started as `qemu-system-x86_64 -enable-kvm`, not libvirt's.
        samples = wait_until(
            lambda: (m := exporter.metrics()).get(DEBIAN_RULE) == 1 and m, what="its rule"
        )
        assert samples["ksmtuned_running"] == 1
        assert samples["ksmtuned_threshold_bytes"] == threshold * 1024
        page_kb = os.sysconf("SC_PAGESIZE") // 1024
        paused_kb = read_rss_pages(Path("/proc"), paused) * page_kb
        libvirt_kb = read_rss_pages(Path("/proc"), libvirt.pid) * page_kb
        committed_kb = samples["ksmtuned_committed_bytes"] // 1024
        assert abs(committed_kb - tuned.looks()[-1].committed_kb) <= COMMITTED_SLACK_KB
        assert paused_kb <= committed_kb < paused_kb + libvirt_kb // 2
        said = "runs /usr/sbin/ksmtuned: committed memory is pgrep -f '^qemu-system.*-enable-kvm'"
        wait_until(lambda: said in exporter.log(), what="the rule in the log")

        # Free memory under its threshold: ksmtuned starts KSM; over it again: stops it.
        seen = len(edges(exporter))
        since = just_after_a_look(tuned)
        with allocated(2048):
            edge = next_edge(exporter, seen, "ksmtuned's start")
            assert (edge["to"], edge["cause"]) == ("running", "ksmtuned")
            look = check_against_log(edge, tuned, threshold, since)
            assert look.free_kb < threshold
            since = just_after_a_look(tuned)
        edge = next_edge(exporter, seen + 1, "ksmtuned's stop")
        assert (edge["to"], edge["cause"]) == ("stopped", "ksmtuned")
        look = check_against_log(edge, tuned, threshold, since)
        assert look.free_kb > threshold

        # A start by hand with plenty free is someone else's; ksmtuned's stop a second
        # later is its own.
        since = len(tuned.looks())
        real_ksm.write("run", 1)
        edge = next_edge(exporter, seen + 2, "the start by hand")
        assert (edge["to"], edge["cause"]) == ("running", "other")
        edge = next_edge(exporter, seen + 3, "ksmtuned's stop of it")
        assert (edge["to"], edge["cause"]) == ("stopped", "ksmtuned")
        check_against_log(edge, tuned, threshold, since)

        # Its configuration edited in place, ksmtuned not restarted: it still runs with
        # the old threshold, which the exporter no longer claims to know.
        write_conf(conf, tmp_path, threshold + 512 * MB)
        wait_until(
            lambda: "ksmtuned_threshold_bytes" not in exporter.metrics(),
            what="the threshold left out",
        )
        real_ksm.write("run", 1)
        edge = next_edge(exporter, seen + 4, "the start by hand")
        assert (edge["cause"], edge["ksmtuned_threshold_bytes"]) == ("unknown", None)
        edge = next_edge(exporter, seen + 5, "ksmtuned's stop of it")
        assert (edge["to"], edge["cause"]) == ("stopped", "unknown")
        stops = [line for line in tuned.log.read_text().splitlines() if line.endswith("stop ksm")]
        assert stops[-1].endswith(f"and free > {threshold}, stop ksm")  # the old one
        changed = f"{conf} changed since ksmtuned started (pid {tuned.pid}); restart ksmtuned"
        assert exporter.log().count(changed) == 1 and exporter.log().count(said) == 1

        # Killed, not yet reaped: a zombie does not run; a start now is someone else's.
        pid = tuned.pid
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
            what="ksmtuned a zombie",
        )
        wait_until(lambda: exporter.metrics()["ksmtuned_running"] == 0, what="not running")
        real_ksm.write("run", 1)
        edge = next_edge(exporter, seen + 6, "a start with ksmtuned a zombie")
        assert (edge["to"], edge["cause"]) == ("running", "other")
        tuned.parent.send_signal(signal.SIGUSR1)  # reaped
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="ksmtuned reaped")
        real_ksm.write("run", 0)
        edge = next_edge(exporter, seen + 7, "a stop with ksmtuned gone")
        assert (edge["to"], edge["cause"]) == ("stopped", "other")
    guests.drain(real_ksm, baseline)
