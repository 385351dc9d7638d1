"""The process-table collectors on fake procfs trees: per-VM KSM, ksmtuned, ksmd, vmstat."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from ksm_exporter.collectors import source
from ksm_exporter.collectors.source import HIDDEN
from ksm_exporter.flags import serve as serve_flags
from ksm_exporter.model.derived import page_size
from ksm_exporter.readers.processes import read_process_names
from ksm_exporter.readers.vm_processes import (
    VM_PATTERN,
    ProcessReport,
    read_vm_processes,
)
from ksm_exporter.state.notices import Notices
from ksm_exporter.state.read_errors import ProcessReadErrors
from tests.support import FIXTURES, copy_fixture, run_exporter
from tests.support.as_nobody import run_as_nobody
from tests.support.collect import (
    QEMU,
    collector,
    scrape,
    vm_labels,
)

pytestmark = pytest.mark.skipif(page_size() != 4096, reason="fixtures hold 4 KiB pages")


INSTANCE = vm_labels(1001, "instance-0000001a")
WEB01 = vm_labels(1002, "web01")
DB = vm_labels(1003, "db,primary")
NONAME = vm_labels(1004, "qemu-kvm")
SECRET = vm_labels(1005, "secret")

VMS_SAMPLES = {
    f"ksm_process_merging_pages{{{DB}}}": 0,
    f"ksm_process_merging_pages{{{INSTANCE}}}": 1500000,
    f"ksm_process_merging_pages{{{NONAME}}}": 42,
    f"ksm_process_merging_pages{{{SECRET}}}": 7,
    f"ksm_process_merging_pages{{{WEB01}}}": 250000,
    f"ksm_process_rmap_items{{{DB}}}": 10,
    f"ksm_process_rmap_items{{{INSTANCE}}}": 2100000,
    f"ksm_process_rmap_items{{{SECRET}}}": 100,
    f"ksm_process_rmap_items{{{WEB01}}}": 350000,
    f"ksm_process_zero_pages{{{INSTANCE}}}": 120,
    f"ksm_process_zero_pages{{{SECRET}}}": 0,
    f"ksm_process_profit_bytes{{{DB}}}": -640,
    f"ksm_process_profit_bytes{{{INSTANCE}}}": 6010091520,
    f"ksm_process_profit_bytes{{{SECRET}}}": 7 * 4096 - 100 * 64,
    f"ksm_process_mergeable{{{INSTANCE}}}": 1,
    f"ksm_process_mergeable{{{SECRET}}}": 1,
    f"ksm_process_merge_any{{{INSTANCE}}}": 0,
    f"ksm_process_merge_any{{{SECRET}}}": 0,
    "ksm_process_series_dropped": 0,
    'ksm_process_read_errors_total{reason="unreadable"}': 0,
    'ksm_process_read_errors_total{reason="vanished"}': 1,  # the zombie, 1007
    # qemu-kvm x3 of 8 GiB, one of 2 GiB, 1000 pages and the zombie; not qemu-img, qemu-ga.
    "ksmtuned_committed_bytes": 27266976 * 1024,
    "ksmtuned_threshold_bytes": 6566242 * 1024,
    "ksmtuned_free_bytes": (4194304 + 204800 + 3145728) * 1024,
    "ksmtuned_would_run": 1,
    "ksmtuned_running": 1,
    # pid 812 runs Fedora's script (proc/812/root/usr/sbin/ksmtuned).
    "ksmtuned_committed_rule_info{rule=\"pgrep '^qemu(-(kvm|system-.+)|:.{1,11})$' | ps -o rsz=\","
    'script="/usr/sbin/ksmtuned",variant="fedora"}': 1,
    "ksm_ksmd_cpu_seconds_total": (1234 + 566) / os.sysconf("SC_CLK_TCK"),
    "ksm_cow_breaks_total": 4711,
    "ksm_swapin_copies_total": 3,
}


def test_compute_node() -> None:
    c = collector(FIXTURES / "procfs-vms" / "proc")
    assert scrape(c) == VMS_SAMPLES
    assert c.read_errors.counts() == {}


def test_errors_add_up_over_scrapes() -> None:
    c = collector(FIXTURES / "procfs-vms" / "proc")
    scrape(c)
    assert scrape(c)['ksm_process_read_errors_total{reason="vanished"}'] == 2


def test_most_merging_processes_are_kept() -> None:
    samples = scrape(collector(FIXTURES / "procfs-vms" / "proc", limit=2))
    assert {k: v for k, v in samples.items() if k.startswith("ksm_process_merging_pages")} == {
        f"ksm_process_merging_pages{{{INSTANCE}}}": 1500000,
        f"ksm_process_merging_pages{{{WEB01}}}": 250000,
    }
    assert samples["ksm_process_series_dropped"] == 3


def test_process_collector_off() -> None:
    samples = scrape(collector(FIXTURES / "procfs-vms" / "proc", pattern=None))
    assert not [k for k in samples if k.startswith("ksm_process_")]
    assert samples["ksmtuned_committed_bytes"] == VMS_SAMPLES["ksmtuned_committed_bytes"]
    assert samples["ksm_ksmd_cpu_seconds_total"] == VMS_SAMPLES["ksm_ksmd_cpu_seconds_total"]


def test_another_pattern() -> None:
    samples = scrape(collector(FIXTURES / "procfs-vms" / "proc", pattern=re.compile("^qemu-img$")))
    assert samples[f"ksm_process_merging_pages{{{vm_labels(2001, 'qemu-img')}}}"] == 1
    # ksmtuned's own pattern still decides what it counts as committed.
    assert samples["ksmtuned_committed_bytes"] == VMS_SAMPLES["ksmtuned_committed_bytes"]


def test_old_kernel() -> None:
    c = collector(FIXTURES / "procfs-old" / "proc")
    assert scrape(c) == {
        # No per-process KSM files (before 5.19): no series, and no error either.
        "ksm_process_series_dropped": 0,
        'ksm_process_read_errors_total{reason="unreadable"}': 0,
        'ksm_process_read_errors_total{reason="vanished"}': 0,
        # No ksmtuned runs: no rule to count committed memory by, no decision.
        "ksmtuned_threshold_bytes": 3260710 * 1024,
        "ksmtuned_free_bytes": 11100000 * 1024,
        "ksmtuned_running": 0,
        "ksm_ksmd_cpu_seconds_total": 30000 / os.sysconf("SC_CLK_TCK"),
        # No cow_ksm, ksm_swpin_copy lines in vmstat: no series.
    }
    assert c.read_errors.counts() == {}


def test_fixture_trees_without_processes() -> None:
    # No pid 1: a process table that does not show every process. ksmtuned's and ksmd's
    # figures are left out rather than reported as "not running" / 0.
    c = collector(FIXTURES / "linux-6.18" / "proc")
    samples = scrape(c)
    for name in ("ksmtuned_committed_bytes", "ksmtuned_running", "ksmtuned_would_run"):
        assert name not in samples
    assert samples["ksmtuned_threshold_bytes"] > 0  # meminfo and the config are readable
    assert "ksm_ksmd_cpu_seconds_total" not in samples
    assert "ksm_cow_breaks_total" not in samples
    assert not [k for k in samples if k.startswith("ksm_process_")]
    assert {n: r.missing for n, r in c.last.items()} == {
        "process": HIDDEN,
        "ksmtuned": HIDDEN,
        "ksmd": HIDDEN,
        "vmstat": None,
    }


def test_processes_of_other_users_hidden(tmp_path: Path) -> None:
    """hidepid=invisible / ProtectProc=invisible: /proc lists our own processes only, so
    pid 1, kthreadd, ksmd, ksmtuned and the qemu processes of other users are missing."""
    proc = copy_fixture("procfs-vms", tmp_path) / "proc"
    own = {"3000"}
    for entry in proc.iterdir():
        if entry.name.isdigit() and entry.name not in own:
            shutil.rmtree(entry)
    shutil.copytree(FIXTURES / "procfs-vms" / "proc" / "1001", proc / "3000")  # "ours"
    c = collector(proc)
    samples = scrape(c)
    for name in (
        "ksmtuned_running",
        "ksmtuned_committed_bytes",
        "ksmtuned_would_run",
        "ksm_ksmd_cpu_seconds_total",
        "ksm_process_series_dropped",
    ):
        assert name not in samples, name
    assert c.last["ksmtuned"].missing == HIDDEN and c.last["ksmd"].missing == HIDDEN
    assert c.last["process"].missing == HIDDEN
    # The same tree with pid 1 visible: every figure is there again.
    shutil.copytree(FIXTURES / "procfs-vms" / "proc" / "1", proc / "1")
    samples = scrape(c)
    assert samples["ksmtuned_running"] == 0 and samples["ksmtuned_free_bytes"] > 0
    assert c.last["ksmtuned"].missing is None


def test_a_process_vanishing_mid_read(tmp_path: Path) -> None:
    proc = copy_fixture("procfs-vms", tmp_path) / "proc"
    names = read_process_names(proc)
    shutil.rmtree(proc / "1001")  # exits after the walk named it
    report = read_vm_processes(proc, names, QEMU, 200)
    assert [p.pid for p in report.processes] == [1003, 1004, 1005, 1002]  # by vm name
    assert (report.vanished, report.unreadable, report.dropped) == (2, 0, 0)


def test_broken_files_are_counted(tmp_path: Path) -> None:
    proc = copy_fixture("procfs-vms", tmp_path) / "proc"
    (proc / "vmstat").write_text("cow_ksm many\n")
    (proc / "37" / "stat").write_text("37 (ksmd) S 2\n")
    c = collector(proc, config=FIXTURES / "ksmtuned" / "broken.conf")
    samples = scrape(c)
    assert "ksm_cow_breaks_total" not in samples
    assert "ksm_ksmd_cpu_seconds_total" not in samples
    assert samples["ksmtuned_threshold_bytes"] == VMS_SAMPLES["ksmtuned_threshold_bytes"]
    assert samples[f"ksm_process_merging_pages{{{INSTANCE}}}"] == 1500000
    assert c.read_errors.counts() == {"vmstat": 1, "ksmd/stat": 1, "broken.conf": 1}


def test_unreadable_procfs(tmp_path: Path) -> None:
    c = collector(tmp_path / "absent")
    samples = scrape(c)
    assert "ksmtuned_committed_bytes" not in samples  # no process table
    assert "ksmtuned_threshold_bytes" not in samples  # no meminfo
    # Each shared read is counted once per scrape, however many collectors use it.
    assert c.read_errors.counts() == {"proc": 1, "meminfo": 1}
    assert c.last["ksmtuned"].missing and c.last["ksmd"].missing


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_a_ksm_stat_we_may_not_read() -> None:
    # Root reads a 0400 file anyway: read as nobody, as an exporter without root would.
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        proc = copy_fixture("procfs-vms", Path(d)) / "proc"
        os.chmod(proc / "1005" / "ksm_stat", 0o400)

        def read() -> object:
            r = read_vm_processes(proc, read_process_names(proc), QEMU, 200)
            return [[p.pid for p in r.processes], r.vanished, r.unreadable, r.first_error]

        pids, vanished, unreadable, error = run_as_nobody(read)  # type: ignore[misc]
    assert pids == [1003, 1001, 1004, 1002]
    assert (vanished, unreadable) == (1, 1)
    assert error == f"{proc}/1005: [Errno 13] Permission denied: '{proc}/1005/ksm_stat'"


def test_flags() -> None:
    args = serve_flags.parser().parse_args([])
    assert args.process_collector is True
    assert args.process_pattern.pattern == VM_PATTERN
    assert (args.process_max, args.settle_full_scans) == (100, 3)
    assert args.ksmtuned_config == Path("/etc/ksmtuned.conf")
    args = serve_flags.parser().parse_args(
        [
            "--no-collector.process",
            "--collector.process.pattern=^kvm$",
            "--collector.process.max=5",
            "--settle.full-scans=4",
            "--collector.ksmtuned.config=/tmp/k.conf",
        ]
    )
    assert (args.process_collector, args.process_pattern.pattern) == (False, "^kvm$")
    assert (args.process_max, args.settle_full_scans) == (5, 4)
    assert args.ksmtuned_config == Path("/tmp/k.conf")


@pytest.mark.parametrize(
    "flag", ["--collector.process.pattern=(", "--collector.process.max=0", "--settle.full-scans=x"]
)
def test_bad_flags(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        serve_flags.parser().parse_args([flag])
    assert e.value.code == 2
    assert flag.split("=")[0] in capsys.readouterr().err


def test_exporter_serves_them(tmp_path: Path) -> None:
    root = FIXTURES / "procfs-vms"
    conf = f"--collector.ksmtuned.config={FIXTURES / 'ksmtuned' / 'tuned.conf'}"
    with run_exporter(root, conf, "--collector.process.max=1", tmp=tmp_path) as exporter:
        samples = exporter.metrics()
    assert samples[f"ksm_process_merging_pages{{{INSTANCE}}}"] == 1500000
    assert samples["ksm_process_series_dropped"] == 4
    assert samples["ksmtuned_threshold_bytes"] == 11490924 * 1024  # KSM_THRES_COEF=35
    assert samples["ksm_settled"] == 0  # run=0 in this tree
    assert "ksm_settle_duration_seconds" not in samples


def test_unreadable_processes_are_logged_when_they_start_and_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notices = Notices()
    errors = ProcessReadErrors(notices)
    failing = ProcessReport(processes=(), unreadable=2, first_error="/proc/7: denied")
    with caplog.at_level(logging.INFO, logger="ksm_exporter.state.read_errors"):
        for report in (failing, failing, ProcessReport(processes=(), vanished=1), failing):
            errors.record(report)
        assert caplog.records == []  # a scrape never logs: the watcher thread does
        notices.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "cannot read the KSM state of 2 matching processes (run as root or with "
        "CAP_DAC_READ_SEARCH): /proc/7: denied",
        "the KSM state of every matching process is readable again",
        "cannot read the KSM state of 2 matching processes (run as root or with "
        "CAP_DAC_READ_SEARCH): /proc/7: denied",
    ]
    assert errors.counts() == {"vanished": 1, "unreadable": 6}


def test_one_walk_of_the_process_table_per_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    """process, ksmd and ksmtuned share one listing of /proc and one meminfo read."""
    c = collector(FIXTURES / "procfs-vms" / "proc")
    walks: list[Path] = []
    reads: list[Path] = []
    names = c.names.names
    monkeypatch.setattr(c.names, "names", lambda procfs: walks.append(procfs) or names(procfs))
    real_meminfo = source.read_meminfo
    monkeypatch.setattr(
        source, "read_meminfo", lambda procfs: reads.append(procfs) or real_meminfo(procfs)
    )
    samples = scrape(c)
    assert samples["ksmtuned_running"] == 1 and samples["ksm_ksmd_cpu_seconds_total"] > 0
    assert len(walks) == 1 and len(reads) == 1
    scrape(c)
    assert len(walks) == 2 and len(reads) == 2
