"""Files as a disk, an editor or an attacker may leave them.

Numbers from procfs and sysfs that no kernel prints (400 digits, past 64 bits, "+5",
other scripts' digits) are a read error for that file, never an exception that fails a
scrape: prometheus-client's float() raises OverflowError past 1e308. Configuration files
replaced by a FIFO, a device or a directory are refused without blocking. The state file
as `transitions` reads it: as the daemon does (its tail, no FIFO), each number bounded by
the one rule (model/numbers.py)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from ksm_exporter.model.derived import page_size
from ksm_exporter.readers import parse_kernel_int, read_regular_file
from ksm_exporter.readers.ksmtuned_conf import (
    parse_ksmtuned_conf,
    read_ksmtuned_conf,
)
from ksm_exporter.readers.meminfo import parse_meminfo
from ksm_exporter.readers.process_ksm import parse_ksm_stat, read_process_ksm
from ksm_exporter.readers.processes import list_pids, parse_stat, read_rss_pages
from ksm_exporter.readers.vmstat import parse_vmstat
from tests.support import copy_fixture, run_cli, run_exporter, wait_until
from tests.support.collect import collector, ksm_scrapes, scrape
from tests.support.fake_procfs import stat_line

HUGE = "9" * 400


@pytest.mark.parametrize(
    ("text", "signed", "value"),
    [
        ("0", False, 0),
        ("18446744073709551615\n", False, 2**64 - 1),
        ("-9223372036854775808", True, -(2**63)),
        ("9223372036854775807", True, 2**63 - 1),
        (b" 42 \n", False, 42),
    ],
)
def test_kernel_integers_in_range(text: str | bytes, signed: bool, value: int) -> None:
    assert parse_kernel_int(text, "x", signed=signed) == value


@pytest.mark.parametrize(
    ("text", "signed", "why"),
    [
        (HUGE, False, "outside the unsigned 64-bit range"),
        ("-" + HUGE, True, "outside the signed 64-bit range"),
        ("18446744073709551616", False, "outside the unsigned"),
        ("9223372036854775808", True, "outside the signed"),
        ("-1", False, "outside the unsigned"),
        ("+5", False, "not an integer"),
        ("1_000", False, "not an integer"),
        ("\u0661\u0662", False, "not an integer"),  # Arabic-Indic digits: int() takes them
        ("1e5", False, "not an integer"),
        ("", False, "empty"),
    ],
)
def test_kernel_integers_refused(text: str, signed: bool, why: str) -> None:
    with pytest.raises(ValueError, match=f"^x: {why}"):
        parse_kernel_int(text, "x", signed=signed)


@pytest.mark.parametrize(
    "parse",
    [
        lambda: parse_meminfo(f"MemTotal: {HUGE} kB\nMemFree: 1 kB\n"),
        # In range as kB, past 64 bits once in bytes.
        lambda: parse_meminfo(f"MemTotal: {2**63} kB\nMemFree: 1 kB\n"),
        lambda: parse_vmstat(f"cow_ksm {HUGE}\n"),
        lambda: parse_ksm_stat(f"ksm_rmap_items {HUGE}\n"),
        lambda: parse_ksm_stat(f"ksm_process_profit -{HUGE}\n"),
        lambda: parse_stat(stat_line(37, "ksmd", "S", True, 2**64, 0, 0)),
    ],
)
def test_every_parser_refuses_out_of_range_numbers(parse: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="range"):
        parse()


def test_files_with_huge_numbers(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "9").mkdir(parents=True)
    (proc / "9" / "statm").write_text(f"1 {HUGE} 0 0 0 0 0\n")
    (proc / "9" / "ksm_merging_pages").write_text(HUGE + "\n")
    (proc / "\u00b2").mkdir()  # isdigit() but not int(): not a pid
    with pytest.raises(ValueError, match="range"):
        read_rss_pages(proc, 9)
    with pytest.raises(ValueError, match="ksm_merging_pages: outside"):
        read_process_ksm(proc, 9)
    assert list_pids(proc) == [9]


def test_ksmtuned_conf_number_past_bash_arithmetic_keeps_the_default() -> None:
    config, errors = parse_ksmtuned_conf(f"KSM_THRES_COEF={HUGE}\nKSM_NPAGES_MAX=99\n")
    assert (config.KSM_THRES_COEF, config.KSM_NPAGES_MAX) == (20, 99)
    assert errors == [
        f"KSM_THRES_COEF: outside the signed 64-bit range: {HUGE[:40]}; using the default"
    ]


@pytest.mark.skipif(page_size() != 4096, reason="fixtures hold 4 KiB pages")
def test_a_scrape_with_400_digit_numbers_everywhere_answers_and_counts(tmp_path: Path) -> None:
    root = copy_fixture("procfs-vms", tmp_path)
    proc = root / "proc"
    (proc / "meminfo").write_text(f"MemTotal: {HUGE} kB\nMemFree: 1 kB\n")
    (proc / "vmstat").write_text(f"cow_ksm {HUGE}\n")
    (proc / "37" / "stat").write_text(stat_line(37, "ksmd", "S", True, int(HUGE), 0, 0))
    (proc / "1001" / "ksm_stat").write_text(f"ksm_rmap_items {HUGE}\nksm_merging_pages 1\n")
    (root / "sys/kernel/mm/ksm/pages_shared").write_text(HUGE + "\n")
    procfs = collector(proc)
    samples = ksm_scrapes(root).scrape()
    procfs_samples = scrape(procfs)
    assert "ksm_pages_shared" not in samples and "ksm_memory_total_bytes" not in samples
    assert samples['ksm_exporter_read_errors_total{file="pages_shared"}'] == 1
    assert samples['ksm_exporter_read_errors_total{file="meminfo"}'] == 1
    assert "ksm_cow_breaks_total" not in procfs_samples
    assert "ksm_ksmd_cpu_seconds_total" not in procfs_samples
    assert procfs_samples['ksm_process_read_errors_total{reason="unreadable"}'] == 1
    # meminfo: read once per scrape, by the ksmtuned collector here.
    assert procfs.read_errors.counts() == {"vmstat": 1, "ksmd/stat": 1, "meminfo": 1}


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "too large"])
def test_a_configuration_file_that_is_no_regular_file_is_refused_at_once(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "ksmtuned.conf"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: open() and read() without O_NONBLOCK block for good
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"# \n" * 40000)
    with pytest.raises(OSError, match=r"not a regular file|larger than|Is a directory"):
        read_regular_file(path, 64 * 1024)
    with pytest.raises(OSError, match=r"not a regular file|larger than|Is a directory"):
        read_ksmtuned_conf(path)


@pytest.mark.skipif(page_size() != 4096, reason="fixtures hold 4 KiB pages")
def test_a_fifo_as_ksmtuned_conf_is_a_read_error_not_a_hung_scrape(tmp_path: Path) -> None:
    config = tmp_path / "ksmtuned.conf"
    os.mkfifo(config)
    c = collector(copy_fixture("procfs-vms", tmp_path) / "proc", config=config)
    samples = scrape(c)  # would block in open() without O_NONBLOCK
    # Its settings are unknown: no threshold (ksmtuned's defaults would be a guess), and
    # the collector says it could not observe its whole source.
    assert "ksmtuned_threshold_bytes" not in samples
    assert "ksmtuned_would_run" not in samples
    assert samples["ksmtuned_free_bytes"] > 0  # meminfo was read all the same
    assert c.read_errors.counts() == {"ksmtuned.conf": 1}
    assert "ksmtuned.conf: not a regular file" in str(c.last["ksmtuned"].missing)


def test_a_fifo_as_the_settings_file_neither_blocks_a_reload_nor_the_shutdown(
    tmp_path: Path,
) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    settings = tmp_path / "ksm-exporter"
    os.mkfifo(settings)
    with run_exporter(root, f"--reload.args-file={settings}", tmp=tmp_path) as exporter:
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "not a regular file" in exporter.log(), what="the refusal")
        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(15) == 0


ENTRY = '{"from": "stopped", "run": 1, "timestamp": 1000000000.5, "to": "running"}\n'


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_transitions_refuses_a_state_file_that_is_no_regular_file_at_once(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "state.jsonl"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a plain read blocks for good
    elif kind == "device":
        path.symlink_to("/dev/zero")  # a plain read never ends
    else:
        path.mkdir()
    r = run_cli("transitions", f"--state.file={path}")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (
        f"ksm-exporter transitions: cannot read {path}: "
        f"{'Is a directory' if kind == 'directory' else 'not a regular file'}\n"
    )


def test_transitions_reads_the_tail_of_a_huge_state_file_as_the_daemon_does(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.jsonl"
    with open(path, "wb") as f:
        f.truncate(2**30)  # 1 GiB, sparse: a line of NUL bytes, never read
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + ENTRY.encode())
    r = run_cli("transitions", "--json", f"--state.file={path}")
    assert [t["timestamp"] for t in json.loads(r.stdout)["transitions"]] == [1000000000.5]
    assert r.returncode == 1 and r.stderr == (
        f"ksm-exporter transitions: {path}: skipped 1 lines (before the last 8 MiB, not read)\n"
    )


def test_numbers_no_field_holds_are_each_entrys_error_in_every_reader(tmp_path: Path) -> None:
    """A 310-digit timestamp, 1e400, NaN, a negative or 2^64 bytes: dropped with a reason by
    the daemon's loader and by `transitions`, never an OverflowError."""
    path = tmp_path / "state.jsonl"
    bad = [
        '{"run": 1, "timestamp": 1' + "0" * 309 + ', "to": "running"}',
        '{"run": 1, "timestamp": 1e400, "to": "running"}',
        '{"run": 1, "timestamp": NaN, "to": "running"}',
        '{"run": 1, "timestamp": 1, "to": "running", "mem_free_bytes": -1}',
        '{"run": 1, "timestamp": 1, "to": "running", "mem_total_bytes": 18446744073709551616}',
    ]
    path.write_text(ENTRY + "\n".join(bad) + "\n")
    r = run_cli("transitions", "--json", f"--state.file={path}")
    assert len(json.loads(r.stdout)["transitions"]) == 1
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "3 lines (timestamp: not a finite time between 1970 and now)" in r.stderr
    root = copy_fixture("linux-6.18", tmp_path)
    with run_exporter(root, f"--state.file={path}", tmp=tmp_path) as exporter:
        assert len(json.loads(exporter.get("/transitions")[1])) == 1
        assert exporter.metrics()["ksm_exporter_state_file_errors_total"] == len(bad)
