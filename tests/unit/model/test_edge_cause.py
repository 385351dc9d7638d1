"""Who made each edge of `run`: ksmtuned by its own rule, another controller, or no telling.

A fixture /proc holds a compute node as ksmtuned sees it (meminfo, a ksmtuned process,
qemu processes with their rss, maybe MOM or virt-handler); a fixture sysfs holds `run`.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ksm_exporter.cli import main
from ksm_exporter.daemon.systemd import JournalHandler
from ksm_exporter.daemon.web.landing import render_landing
from ksm_exporter.model.derived import KIB, RunState, page_size
from ksm_exporter.model.edge_cause import (
    Cause,
    EdgeContext,
    KsmtunedFigures,
    ProcessesSeen,
    edge_cause,
    explain_edge,
)
from ksm_exporter.model.watch_format import watch_line
from ksm_exporter.readers import Paths
from ksm_exporter.readers.edge_inputs import edge_context
from ksm_exporter.readers.meminfo import read_meminfo
from ksm_exporter.state import bounded_reads
from ksm_exporter.state.monitor import KsmMonitor
from ksm_exporter.state.notices import Notices
from ksm_exporter.state.read_errors import ReadErrors
from ksm_exporter.state.state_file import StateFile
from ksm_exporter.state.transitions import Transition, TransitionTracker
from tests.support import FIXTURES, copy_fixture, wait_until, write_ksm
from tests.support.as_nobody import run_as_nobody, run_in_child
from tests.support.fake_procfs import QEMU_PIDS, write_ksmtuned_node, write_meminfo, write_statm
from tests.support.monitor import fixture_monitor

PAGE = page_size()
STOCK_CONF = FIXTURES / "ksmtuned" / "stock.conf"  # KSM_THRES_COEF 20: 20% of MemTotal
TOTAL_KB = 32 * 1024 * 1024
THRES_KB = TOTAL_KB * 20 // 100  # ksmtuned's threshold on this 32 GiB node
GIB_KB = 1024 * 1024

# --- the rule -------------------------------------------------------------------------------

SEEN = ProcessesSeen(visible=True, ksmtuned_running=True)
LOW = KsmtunedFigures(TOTAL_KB, THRES_KB, 28 * GIB_KB, THRES_KB - 1)  # ksmtuned starts KSM
HIGH = KsmtunedFigures(TOTAL_KB, THRES_KB, 10 * GIB_KB, 20 * GIB_KB)  # ksmtuned stops KSM


@pytest.mark.parametrize(
    ("run", "figures", "seen", "cause"),
    [
        (1, LOW, SEEN, Cause.KSMTUNED),
        (0, HIGH, SEEN, Cause.KSMTUNED),
        (0, LOW, SEEN, Cause.OTHER),  # ksmtuned would have kept it running
        (1, HIGH, SEEN, Cause.OTHER),
        (5, LOW, SEEN, Cause.KSMTUNED),  # the offline bit does not change the state
        (2, LOW, SEEN, Cause.OTHER),  # ksmtuned never unmerges
        (1, LOW, ProcessesSeen(visible=True), Cause.OTHER),  # no ksmtuned
        (1, LOW, ProcessesSeen(visible=False), Cause.UNKNOWN),
        (2, LOW, ProcessesSeen(visible=False), Cause.OTHER),
        (1, KsmtunedFigures(TOTAL_KB, None, 28 * GIB_KB, 1), SEEN, Cause.UNKNOWN),
        (1, KsmtunedFigures(TOTAL_KB, THRES_KB, None, 1), SEEN, Cause.UNKNOWN),
    ],
)
def test_cause_of_an_edge(
    run: int, figures: KsmtunedFigures, seen: ProcessesSeen, cause: Cause
) -> None:
    assert edge_cause(run, figures, seen) is cause


def test_committed_alone_makes_ksmtuned_start_with_free_memory_above_its_threshold() -> None:
    # committed + thres > total: ksmtuned keeps KSM running even with 20 GiB free.
    figures = KsmtunedFigures(TOTAL_KB, THRES_KB, TOTAL_KB - THRES_KB, 20 * GIB_KB)
    assert figures.would_run() is True
    assert edge_cause(1, figures, SEEN) is Cause.KSMTUNED


def test_the_controller_is_named_only_when_the_cause_is_other() -> None:
    mom = ProcessesSeen(visible=True, ksmtuned_running=True, controllers=("mom",))
    assert explain_edge(0, LOW, mom).controller == "mom"
    assert explain_edge(1, LOW, mom).controller is None  # ksmtuned's own rule explains it
    context = explain_edge(1, LOW, mom)
    assert context.ksmtuned_threshold_bytes == THRES_KB * KIB
    assert context.ksmtuned_free_bytes == (THRES_KB - 1) * KIB


# --- on a fixture node ----------------------------------------------------------------------


def node(tmp_path: Path, **kwargs: object) -> tuple[Path, KsmMonitor]:
    """A fixture node with KSM stopped, and a monitor that explains its edges."""
    root = tmp_path / "node"
    shutil.copytree(FIXTURES / "linux-6.18" / "sys", root / "sys")
    write_ksm(root, "run", 0)
    write_ksmtuned_node(root / "proc", page_size=PAGE, **kwargs)  # type: ignore[arg-type]
    monitor = fixture_monitor(root, STOCK_CONF)
    monitor.poll()  # the first look: no edge
    return root, monitor


def edge(root: Path, monitor: KsmMonitor, run: int) -> Transition:
    """Write `run`, poll, and return the edge recorded."""
    before = len(monitor.tracker_state().history)
    write_ksm(root, "run", run)
    monitor.poll()
    history = monitor.tracker_state().history
    assert len(history) == before + 1, f"run={run} made no edge"
    return history[-1]


def test_ksmtuned_starts_and_stops_ksm_as_memory_crosses_its_threshold(tmp_path: Path) -> None:
    # 7 VMs of 4 GiB resident, free memory 1 GiB under the threshold: ksmtuned starts KSM.
    vms = [4 * GIB_KB] * 7
    free = THRES_KB - GIB_KB
    root, monitor = node(tmp_path, total_kb=TOTAL_KB, free_kb=free, qemu_rss_kb=vms)
    t = edge(root, monitor, 1)
    assert (t.to_state, t.cause, t.controller) == (RunState.RUNNING, Cause.KSMTUNED, None)
    assert t.ksmtuned_threshold_bytes == THRES_KB * KIB
    assert t.ksmtuned_committed_bytes == 7 * 4 * GIB_KB * KIB
    assert t.ksmtuned_free_bytes == free * KIB
    # Two VMs shut down, free memory 1 GiB over the threshold: ksmtuned stops KSM.
    shutil.rmtree(root / "proc" / "2005")
    shutil.rmtree(root / "proc" / "2006")
    write_meminfo(root / "proc", TOTAL_KB, THRES_KB + GIB_KB)
    t = edge(root, monitor, 0)
    assert (t.to_state, t.cause) == (RunState.STOPPED, Cause.KSMTUNED)
    assert t.ksmtuned_committed_bytes == 5 * 4 * GIB_KB * KIB
    assert t.ksmtuned_free_bytes == (THRES_KB + GIB_KB) * KIB
    # Someone starts it again with plenty of memory free: not ksmtuned's doing.
    t = edge(root, monitor, 1)
    assert t.cause is Cause.OTHER and t.controller is None
    counts = monitor.tracker_state().counts
    assert {k: n for k, n in counts.items() if n} == {
        (RunState.RUNNING, Cause.KSMTUNED): 1,
        (RunState.STOPPED, Cause.KSMTUNED): 1,
        (RunState.RUNNING, Cause.OTHER): 1,
    }
    # The landing page's table: ksmtuned's rule on its inputs, in its words, and the cause.
    page = render_landing(monitor.poll(), monitor.tracker_state(), "/metrics")
    rule = "committed {} + threshold 6553 {} total 32768, free {} threshold 6553"
    start = rule.format(28672, "&gt;", "5529 &lt;")
    stop = rule.format(20480, "&lt;", "7577 &gt;")
    assert f"<td class=l>{start}</td><td class=l>ksmtuned</td>" in page
    assert f"<td class=l>{stop}</td><td class=l>ksmtuned</td>" in page
    assert f"<td class=l>{stop}</td><td class=l>other</td>" in page


def test_an_edge_while_ksmtuned_is_absent_is_other_and_names_the_controller(
    tmp_path: Path,
) -> None:
    low = {"total_kb": TOTAL_KB, "free_kb": THRES_KB // 2, "qemu_rss_kb": [24 * GIB_KB]}
    root, monitor = node(tmp_path / "a", ksmtuned=False, **low)
    t = edge(root, monitor, 1)  # ksmtuned's rule would start it, but it does not run
    assert (t.cause, t.controller) == (Cause.OTHER, None)
    assert t.ksmtuned_free_bytes == THRES_KB // 2 * KIB  # its inputs are kept all the same
    root, monitor = node(tmp_path / "b", ksmtuned=False, controllers=["momd"], **low)
    assert (edge(root, monitor, 1).cause, edge(root, monitor, 0).controller) == (
        Cause.OTHER,
        "mom",
    )
    root, monitor = node(tmp_path / "c", controllers=["virt-handler"], **low)
    assert edge(root, monitor, 1).cause is Cause.KSMTUNED
    t = edge(root, monitor, 0)  # ksmtuned runs, but its rule says run: virt-handler stopped it
    assert (t.cause, t.controller) == (Cause.OTHER, "virt-handler")


def test_hidden_processes_give_unknown_and_no_committed_memory(tmp_path: Path) -> None:
    # hidepid=2 for an unprivileged reader: only its own processes are listed, no pid 1.
    low = {"total_kb": TOTAL_KB, "free_kb": THRES_KB // 2, "qemu_rss_kb": [24 * GIB_KB]}
    root, monitor = node(tmp_path, init=False, **low)
    t = edge(root, monitor, 1)
    assert t.cause is Cause.UNKNOWN and t.ksmtuned_committed_bytes is None
    assert t.ksmtuned_threshold_bytes == THRES_KB * KIB  # meminfo and the config were read
    assert t.to_json()["ksmtuned_committed_bytes"] is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_processes_of_root_unreadable_to_nobody_give_unknown() -> None:
    # hidepid=1: the directories are listed but their files refused. Read as nobody, as an
    # exporter without root's privileges would; the tree must be nobody-traversable.
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        proc = write_ksmtuned_node(
            Path(d) / "proc",
            total_kb=TOTAL_KB,
            free_kb=THRES_KB // 2,
            qemu_rss_kb=[24 * GIB_KB],
            page_size=PAGE,
        )
        for pid in os.listdir(proc):
            if pid.isdigit():
                os.chmod(proc / pid, 0o700)  # as root owns them under hidepid=1
        conf = Path(d) / "ksmtuned.conf"
        shutil.copy(STOCK_CONF, conf)

        memory = read_meminfo(proc)

        def cause() -> object:
            c = edge_context(proc, conf, PAGE, 1, memory)
            return [c.cause.value, c.ksmtuned_committed_bytes, c.ksmtuned_free_bytes]

        assert run_as_nobody(cause) == ["unknown", None, THRES_KB // 2 * KIB]
        # root sees it all: ksmtuned runs and its rule agrees.
        assert edge_context(proc, conf, PAGE, 1, memory).cause is Cause.KSMTUNED


def test_no_ksmtuned_configuration_leaves_the_threshold_out(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    write_ksmtuned_node(
        root / "proc", total_kb=TOTAL_KB, free_kb=THRES_KB // 2, qemu_rss_kb=[], page_size=PAGE
    )
    memory = read_meminfo(root / "proc")
    context = edge_context(root / "proc", tmp_path / "absent.conf", PAGE, 1, memory)
    assert context.cause is Cause.UNKNOWN  # ksmtuned runs; its settings are not to be seen
    assert context.ksmtuned_threshold_bytes is None
    assert context.ksmtuned_free_bytes == THRES_KB // 2 * KIB
    assert edge_context(root / "proc", STOCK_CONF, PAGE, 1, memory).cause is Cause.KSMTUNED


LOW_DEBIAN = {"total_kb": TOTAL_KB, "free_kb": THRES_KB // 2, "qemu_rss_kb": [24 * GIB_KB]}


def test_each_ksmtuned_counts_committed_by_its_own_script(tmp_path: Path) -> None:
    # libvirt's qemu-kvm guests (/usr/libexec/qemu-kvm -name guest=...): Fedora's pgrep
    # finds them by name; Debian's pgrep -f does not (no qemu-system ... -enable-kvm),
    # so with plenty of free memory Debian's ksmtuned stops KSM: a start is someone else's.
    plenty = {"total_kb": TOTAL_KB, "free_kb": THRES_KB * 2, "qemu_rss_kb": [28 * GIB_KB]}
    root, monitor = node(tmp_path / "fedora", **plenty)
    t = edge(root, monitor, 1)  # 28 GiB + the threshold > 32 GiB: Fedora's keeps it running
    assert (t.cause, t.ksmtuned_committed_bytes) == (Cause.KSMTUNED, 28 * GIB_KB * KIB)
    root, monitor = node(tmp_path / "debian", ksmtuned_script="debian", **plenty)
    t = edge(root, monitor, 1)
    assert (t.cause, t.ksmtuned_committed_bytes) == (Cause.OTHER, 0)
    assert edge(root, monitor, 0).cause is Cause.KSMTUNED


def test_an_unrecognised_script_gives_unknown_never_another_rule(tmp_path: Path) -> None:
    root, monitor = node(tmp_path, **LOW_DEBIAN)
    script = root / "proc" / "900" / "root" / "usr" / "sbin" / "ksmtuned"
    script.write_text(script.read_text().replace("-o rsz=", "-o vsz="))
    t = edge(root, monitor, 1)
    assert (t.cause, t.ksmtuned_committed_bytes) == (Cause.UNKNOWN, None)
    assert t.ksmtuned_threshold_bytes == THRES_KB * KIB  # the rest is still observed


def test_a_zombie_ksmtuned_is_not_running(tmp_path: Path) -> None:
    # Killed and not yet reaped: it will never write run again; a stop now is another's.
    root, monitor = node(tmp_path, ksmtuned_state="Z", **LOW_DEBIAN)
    assert edge(root, monitor, 1).cause is Cause.OTHER


def test_configuration_changed_since_ksmtuned_started_gives_unknown(tmp_path: Path) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    proc = write_ksmtuned_node(tmp_path / "proc", page_size=PAGE, **LOW_DEBIAN)  # type: ignore[arg-type]
    (proc / "stat").write_text("cpu  1 2 3 4\nbtime 1700000000\n")
    started = 1700000000 + 100 / hz  # fake_procfs's starttime: 100 ticks after boot
    conf = tmp_path / "ksmtuned.conf"
    shutil.copy(STOCK_CONF, conf)
    memory = read_meminfo(proc)
    os.utime(conf, (started - 60, started - 60))  # written before it started: in force
    assert edge_context(proc, conf, PAGE, 1, memory).cause is Cause.KSMTUNED
    os.utime(conf, (started + 60, started + 60))  # edited since: not what it runs with
    context = edge_context(proc, conf, PAGE, 1, memory)
    assert (context.cause, context.ksmtuned_threshold_bytes) == (Cause.UNKNOWN, None)
    assert context.ksmtuned_committed_bytes == 24 * GIB_KB * KIB


# --- the KSM test report's log, replayed ----------------------------------------------------

# checkKSM_start_time.sh's log of ksmtuned on the report's 32 GB machine (ksmtuned with its
# stock configuration, KSM_THRES_COEF=20), line for line.
REPORT_LOG = """\
2014-07-01 17:38:17: KSM is running. 8783 MB used. 23273 MB free.
2014-07-01 17:39:17: KSM is not running. 6959 MB used. 25097 MB free.
2014-07-01 18:10:18: KSM is running. 25742 MB used. 6315 MB free.
2014-07-01 18:14:18: KSM is not running. 22219 MB used. 9837 MB free.
2014-07-01 18:18:18: KSM is running. 25337 MB used. 6719 MB free.
2014-07-02 09:26:14: KSM is not running. 5536 MB used. 26521 MB free.
2014-07-02 10:36:15: KSM is running. 26088 MB used. 5969 MB free.
2014-07-02 10:40:15: KSM is not running. 21113 MB used. 10944 MB free.
2014-07-02 11:04:16: KSM is running. 26019 MB used. 6038 MB free.
2014-07-02 11:05:16: KSM is not running. 25890 MB used. 6166 MB free.
2014-07-02 11:06:15: KSM is running. 26069 MB used. 5987 MB free.
2014-07-02 11:08:16: KSM is not running. 21428 MB used. 10628 MB free.
2014-07-02 11:15:16: KSM is running. 29210 MB used. 2847 MB free.
2014-07-02 11:16:16: KSM is not running. 19230 MB used. 12827 MB free.
"""
LOG_LINE = re.compile(r"(.{19}): KSM is (running|not running)\. (\d+) MB used\. (\d+) MB free\.")

# free -m (procps 3.2) prints kB >> 10 of MemTotal - MemFree and of MemFree, so each line's
# used + free is 32056 or 32057: MemTotal is 32057 MB and a part, and MemFree's kB past its
# whole MB are either at most that part (sum 32057) or more (32056). 512 kB serves all.
REPORT_TOTAL_KB = 32057 * 1024 + 512
REPORT_VMS = 8  # the VMs' count is not in the report: their rss is spread evenly


def report_memfree_kb(used_mb: int, free_mb: int) -> int:
    return free_mb * 1024 + (0 if used_mb + free_mb == 32057 else 1023)


def replay_report(proc: Path) -> list[Transition]:
    """Each logged line as an edge on a fixture node: MemFree as printed (Buffers and
    Cached 0, so ksmtuned's free is MemFree), ksmtuned running, and all used memory
    being the VMs' rss (ksmtuned's committed). Before the first line KSM was stopped, as
    the script assumes (it had stopped the ksm service and written 2, then 0)."""
    write_ksmtuned_node(
        proc,
        total_kb=REPORT_TOTAL_KB,
        free_kb=REPORT_TOTAL_KB,
        qemu_rss_kb=[0] * REPORT_VMS,
        page_size=PAGE,
    )
    tracker = TransitionTracker()
    for n, line in enumerate(REPORT_LOG.splitlines()):
        m = LOG_LINE.fullmatch(line)
        assert m, line
        at = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S"))
        free_kb = report_memfree_kb(int(m[3]), int(m[4]))
        write_meminfo(proc, REPORT_TOTAL_KB, free_kb)
        for pid in QEMU_PIDS[:REPORT_VMS]:
            write_statm(proc, pid, (REPORT_TOTAL_KB - free_kb) * KIB // REPORT_VMS // PAGE)
        memory = read_meminfo(proc)
        if n == 0:
            tracker.observe(0, memory, at - 1)  # the first look: stopped
        run = 1 if m[2] == "running" else 0
        context = edge_context(proc, STOCK_CONF, PAGE, run, memory)
        assert tracker.observe(run, memory, at, context) is not None
    return list(tracker.state().history)


# What ksmtuned's rule says on the figures printed: it explains 11 of the 14 edges. The
# first start is the ksm service's (`service ksm start`, 23 GB free). Two happened within
# 300 MB of the threshold (6411 MB) on the side where the rule says the opposite; the log
# does not print what decided them (Buffers and Cached, which ksmtuned counts as free, and
# the rss of merged pages, which it counts once per VM).
REPORT_CAUSES = [
    "other",  # start, 23273 MB free: the ksm service
    "ksmtuned",
    "ksmtuned",
    "ksmtuned",
    "other",  # start at 6719 MB free, above the threshold
    "ksmtuned",
    "ksmtuned",
    "ksmtuned",
    "ksmtuned",
    "other",  # stop at 6166 MB free, under the threshold
    "ksmtuned",
    "ksmtuned",
    "ksmtuned",
    "ksmtuned",
]


def test_the_reports_log_replayed_gives_its_edges_free_memory_and_causes(tmp_path: Path) -> None:
    history = replay_report(tmp_path / "proc")
    # Every edge prints back as the report's line, byte for byte.
    assert [watch_line(t.timestamp, t.watch_message()) for t in history] == (
        REPORT_LOG.splitlines()
    )
    # 20% of MemTotal: the report's "6565MB" is this in kB / 1000; it is 6411 MB.
    assert {t.ksmtuned_threshold_bytes for t in history} == {REPORT_TOTAL_KB * 20 // 100 * KIB}
    assert REPORT_TOTAL_KB * 20 // 100 == 6565376
    assert [t.ksmtuned_free_bytes for t in history] == [t.mem_free_bytes for t in history]
    assert [t.cause.value for t in history] == REPORT_CAUSES


def test_transitions_command_answers_the_reports_question(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = StateFile(tmp_path / "state.jsonl")
    assert state.save(replay_report(tmp_path / "proc"))
    assert main(["transitions", f"--state.file={state.path}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "time", "change", "used", "MB", "free", "MB", "ksmtuned's", "rule", "(MB)", "cause"
    ]  # fmt: skip
    # Committed beside free and threshold, in the rule's words: each cause checks by eye.
    assert out[3].split(maxsplit=6)[2:] == [
        "stopped", "->", "running", "25742", "6315  committed 25742 + threshold 6411 > total "
        "32057, free 6315 < threshold 6411   ksmtuned",
    ]  # fmt: skip
    assert out[-3:] == [
        "starts (-> running): 7 (ksmtuned 5, other 2); "
        "free memory min 2847 MB, median 6038 MB, max 23273 MB; "
        "ksmtuned committed min 8783 MB, median 26019 MB, max 29210 MB, threshold 6411 MB",
        "stops (-> stopped): 7 (ksmtuned 6, other 1); "
        "free memory min 6166 MB, median 10944 MB, max 26521 MB; "
        "ksmtuned committed min 5536 MB, median 21113 MB, max 25890 MB, threshold 6411 MB",
        "ksmtuned stops KSM when committed + threshold < total and free > threshold, "
        "and starts it otherwise.",
    ]
    assert main(["transitions", f"--state.file={state.path}", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["transitions"]) == 14 and doc["transitions"][2]["cause"] == "ksmtuned"
    starts = doc["summary"][0]
    assert (starts["state"], starts["edges"], starts["causes"]) == (
        "running",
        7,
        {"ksmtuned": 5, "other": 2},
    )
    assert starts["free_min"] // 2**20 == 2847 and starts["free_max"] // 2**20 == 23273


def test_a_failing_explanation_still_records_the_edge(tmp_path: Path) -> None:
    def broken(run: int, memory: object) -> EdgeContext:
        raise RuntimeError("a bug in reading the edge's inputs")

    root = copy_fixture("linux-6.18", tmp_path)
    monitor = KsmMonitor(
        Paths(root / "sys", root / "proc"),
        TransitionTracker(),
        ReadErrors(Notices()),
        explain_edge=broken,
    )
    monitor.poll()
    t = edge(root, monitor, 1)
    assert t.cause is Cause.UNKNOWN and t.mem_free_bytes is not None


def test_a_hung_read_at_the_edge_leaves_its_cause_unknown_and_the_watcher_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A qemu process whose /proc files hang (its memory map locked) must not stop the
    watcher at an edge: the cause is unknown, and no second read piles up behind it."""
    monkeypatch.setattr(bounded_reads, "EXPLAIN_SECONDS", 0.3)
    vms = [4 * GIB_KB] * 7
    root, monitor = node(tmp_path, total_kb=TOTAL_KB, free_kb=THRES_KB - GIB_KB, qemu_rss_kb=vms)
    statm = root / "proc" / str(QEMU_PIDS[0]) / "statm"
    statm.unlink()
    os.mkfifo(statm)  # a read of it hangs until a writer comes

    def readers() -> int:
        return sum(t.name == "ksm-edge-inputs" for t in threading.enumerate())

    t = edge(root, monitor, 1)
    assert (t.cause, t.ksmtuned_threshold_bytes) == (Cause.UNKNOWN, None)
    t = edge(root, monitor, 0)  # still stuck: this edge starts no second read
    assert t.cause is Cause.UNKNOWN and readers() == 1
    with open(statm, "w") as f:  # the read returns
        f.write(f"0 {4 * GIB_KB * KIB // PAGE} 0 0 0 0 0\n")
    wait_until(lambda: readers() == 0, what="the hung read to return")
    statm.unlink()
    write_statm(root / "proc", QEMU_PIDS[0], 4 * GIB_KB * KIB // PAGE)
    assert edge(root, monitor, 1).cause is Cause.KSMTUNED


def test_journal_fields_of_an_explained_edge() -> None:
    context = EdgeContext(Cause.OTHER, "mom", 6 * 2**30, None, 9 * 2**30)
    t = TransitionTracker()
    t.observe(0, None, 1.0)
    edge_ = t.observe(1, None, 2.0, context)
    assert edge_ is not None
    record = logging.makeLogRecord(
        {"msg": edge_.watch_message(), "levelno": logging.INFO, "fields": edge_.log_fields()}
    )
    entry = JournalHandler(lambda **_: None).entry(record)
    assert {k: v for k, v in entry.items() if k.startswith(("KSM_C", "KSMTUNED"))} == {
        "KSM_CAUSE": "other",
        "KSM_CONTROLLER": "mom",
        "KSMTUNED_THRESHOLD_BYTES": str(6 * 2**30),
        "KSMTUNED_FREE_BYTES": str(9 * 2**30),  # committed was not observed: no field
    }


CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 0x40000


def as_nobody_under_hidepid(fn: Callable[[Path], object], mountpoint: Path) -> object:
    """fn(proc) as nobody, `proc` a fresh procfs mounted with hidepid=2 on `mountpoint` in
    a mount namespace of its own (gone with the child: nothing else ever sees the mount).
    pytest.skip when the kernel or the container refuses the namespace or the mount."""

    def mounted() -> object:
        libc = ctypes.CDLL(None, use_errno=True)
        for call, args in (
            ("unshare", (CLONE_NEWNS,)),
            ("mount", (b"none", b"/", None, MS_REC | MS_PRIVATE, None)),
            ("mount", (b"proc", bytes(mountpoint), b"proc", 0, b"hidepid=2")),
        ):
            if getattr(libc, call)(*args) != 0:
                return {"skip": f"{call}: {os.strerror(ctypes.get_errno())}"}
        return {"result": run_as_nobody(lambda: fn(mountpoint))}

    answer = run_in_child(mounted)
    assert isinstance(answer, dict)
    if "skip" in answer:
        pytest.skip(f"cannot mount a procfs with hidepid=2: {answer['skip']}")
    return answer["result"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a procfs and drop to nobody")
def test_a_real_procfs_with_hidepid_gives_unknown() -> None:
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        memory = read_meminfo(Path("/proc"))

        def explain(proc: Path) -> object:
            c = edge_context(proc, STOCK_CONF, PAGE, 1, memory)
            return [c.cause.value, c.ksmtuned_committed_bytes, c.ksmtuned_free_bytes is None]

        # nobody sees only its own processes: not pid 1, not ksmtuned, not qemu.
        assert as_nobody_under_hidepid(explain, Path(d)) == ["unknown", None, False]
    # root sees every process of the real /proc: whether ksmtuned runs is known.
    assert edge_context(Path("/proc"), STOCK_CONF, PAGE, 1, memory).cause is not Cause.UNKNOWN
