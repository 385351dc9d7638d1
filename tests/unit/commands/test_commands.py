"""`status` and `watch`: checkKSM_pages_info.sh and checkKSM_start_time.sh as commands;
`transitions`: the edges they recorded."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support import (
    FIXTURES,
    REPO,
    copy_fixture,
    exporter_after_a_start,
    exporter_command,
    run_cli,
    wait_until,
    write_ksm,
)
from tests.support.fake_procfs import QEMU_PIDS, write_ksmtuned_node


def test_status_prints_what_checkksm_pages_info_prints() -> None:
    r = run_cli(  # a /proc without VMs: the script's lines alone
        "status",
        f"--path.sysfs={FIXTURES}/linux-2.6.32/sys",
        f"--path.procfs={FIXTURES}/linux-2.6.32/proc",
    )
    assert r.returncode == 0 and r.stderr == ""
    # 178960 pages x 4096 / 1024 / 1024 = 699 (integer division, as in bash)
    assert r.stdout == (
        "KSM saved: 699 MB\n"
        "Sharing_Rate: 6.76061\n"
        "---------------------------------\n"
        "Run: 1\n"
        "Sleep_Millisecs: 20\n"
        "Full_Scans: 152\n"
        "Pages_Sharing: 178960\n"
        "Pages_Shared: 26471\n"
        "Pages_Unshared: 103552\n"
        "Pages_Volatile: 5320\n"
        "Pages_To_Scan: 100\n"
    )


def test_status_adds_the_files_the_script_did_not_know() -> None:
    r = run_cli(
        "status",
        f"--path.sysfs={FIXTURES}/linux-6.18/sys",
        f"--path.procfs={FIXTURES}/linux-6.18/proc",
    )
    lines = r.stdout.splitlines()
    assert lines[:2] == ["KSM saved: 11 MB", "Sharing_Rate: 3"]
    assert lines[3:11] == [
        "Run: 0",
        "Sleep_Millisecs: 20",
        "Full_Scans: 12",
        "Pages_Sharing: 3000",
        "Pages_Shared: 1000",
        "Pages_Unshared: 120000",
        "Pages_Volatile: 12",
        "Pages_To_Scan: 100",
    ]
    assert "General_Profit: -1310720" in lines[11:]
    assert "Advisor_Mode: [none] scan-time" in lines[11:]
    assert len(lines) == 3 + 24


def test_status_json_and_zero_rate_without_sharing() -> None:
    r = run_cli("status", "--json", f"--path.sysfs={FIXTURES}/future/sys")
    d = json.loads(r.stdout)
    assert d["saved_mb"] == 0 and d["sharing_rate"] == 0
    assert d["run"] == 5 and d["ksm_merge_budget"] == 42 and d["advisor_mode"] == "scan-time"


def test_status_says_what_it_skipped() -> None:
    r = run_cli("status", f"--path.sysfs={FIXTURES}/broken/sys")
    assert r.returncode == 0
    assert "KSM saved: ? MB" in r.stdout
    assert "skipped" in r.stderr and "pages_shared: not an integer: 'lots'" in r.stderr


def test_commands_exit_non_zero_with_one_line_where_ksm_is_absent() -> None:
    for cmd in ("status", "watch"):
        r = run_cli(cmd, f"--path.sysfs={FIXTURES}/no-ksm/sys")
        assert r.returncode == 1
        assert len(r.stderr.splitlines()) == 1 and "KSM is not available" in r.stderr


def test_wrong_flag_is_one_line() -> None:
    r = run_cli("--web.listen-adress=:1")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "unrecognized arguments" in r.stderr


WATCH_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: "
    r"KSM is (running|not running)\. (\d+) MB used\. (\d+) MB free\.$"
)


def start_watch(root: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`watch` on a fixture tree, polling every 50 ms, its lines into `out`."""
    with open(out, "w") as f:
        return subprocess.Popen(
            exporter_command(
                "watch",
                f"--path.sysfs={root}/sys",
                f"--path.procfs={root}/proc",
                "--watch.interval=50ms",
                *extra,
            ),
            stdout=f,
            cwd=REPO,
        )


def test_watch_prints_each_edge_like_checkksm_start_time(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)  # run=0: nothing printed at start
    out = tmp_path / "watch.log"
    proc = start_watch(root, out)
    try:
        time.sleep(0.3)
        assert out.read_text() == ""
        for run, n in ((1, 1), (5, 1), (2, 2), (0, 2), (1, 3)):  # 5 = running + offline
            write_ksm(root, "run", run)
            wait_until(lambda n=n: out.read_text().count("\n") == n, what=f"{n} lines")
            time.sleep(0.15)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    lines = out.read_text().splitlines()
    parsed = [WATCH_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [m.group(1) for m in parsed if m] == ["running", "not running", "running"]
    # MemTotal 32831212 kB, MemFree 6470012 kB -> 25743 MB used, 6318 MB free
    assert {(m.group(2), m.group(3)) for m in parsed if m} == {("25743", "6318")}


def test_watch_prints_at_once_when_already_running_and_flushes_on_sigint(tmp_path: Path) -> None:
    root = copy_fixture("linux-4.13", tmp_path)  # run=1
    proc = subprocess.Popen(
        exporter_command("watch", f"--path.sysfs={root}/sys", f"--path.procfs={root}/proc"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # arrives at once although stdout is a pipe
    assert WATCH_LINE.match(line.rstrip("\n")) and "KSM is running." in line
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0 and err == "" and out == ""


def test_python_dash_m_and_version() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "ksm_exporter", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ},
    )
    assert r.returncode == 0 and r.stdout.startswith("ksm-exporter ")


def ksmtuned_node(tmp_path: Path) -> Path:
    """A node with KSM running: 32 GiB, ksmtuned's threshold 20% = 6553 MB; 2 GiB free,
    28 GiB of VMs: ksmtuned's rule starts KSM."""
    root = tmp_path / "node"
    shutil.copytree(FIXTURES / "linux-4.13" / "sys", root / "sys")  # run=1
    write_ksmtuned_node(
        root / "proc",
        total_kb=32 * 2**20,
        free_kb=2 * 2**20,
        qemu_rss_kb=[14 * 2**20, 14 * 2**20],
        page_size=os.sysconf("SC_PAGESIZE"),
    )
    return root


def watch_explain_a_stop_and_a_start(root: Path, tmp_path: Path, exit_within: float) -> list[str]:
    """`watch --explain` (ksmtuned's stock configuration) on `root`, KSM running: its lines
    for the first look, a stop and a start; it must exit 0 on SIGTERM within `exit_within`."""
    out = tmp_path / "watch.log"
    conf = f"--collector.ksmtuned.config={FIXTURES}/ksmtuned/stock.conf"
    proc = start_watch(root, out, "--explain", conf)
    try:
        wait_until(lambda: out.read_text().count("\n") == 1, what="the first line")
        for run, n in ((0, 2), (1, 3)):
            write_ksm(root, "run", run)
            wait_until(lambda n=n: out.read_text().count("\n") == n, what=f"{n} lines")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(exit_within) == 0
    return out.read_text().splitlines()


def test_watch_explain_appends_the_cause_and_ksmtuned_figures(tmp_path: Path) -> None:
    root = ksmtuned_node(tmp_path)
    figures = (
        "ksmtuned (MB) committed 28672 + threshold 6553 > total 32768, free 2048 < threshold 6553."
    )
    running, stopped, started = watch_explain_a_stop_and_a_start(root, tmp_path, exit_within=5)
    # The script's line, byte for byte, then the explanation.
    assert all(WATCH_LINE.match(line.split(" cause: ")[0]) for line in (running, stopped))
    # Running when watch started: who started it is not known.
    assert running.endswith(
        "KSM is running. 30720 MB used. 2048 MB free. cause: unknown; " + figures
    )
    assert started.endswith(
        ": KSM is running. 30720 MB used. 2048 MB free. cause: ksmtuned; " + figures
    )
    # ksmtuned's rule says run with 2 GB free: someone else stopped it.
    assert stopped.endswith(
        ": KSM is not running. 30720 MB used. 2048 MB free. cause: other; " + figures
    )


def test_watch_explain_keeps_printing_when_a_proc_read_hangs(tmp_path: Path) -> None:
    """A qemu process whose memory map is locked hangs reads of its /proc files: the
    edge's line comes all the same (cause unknown), and so do the next ones."""
    root = ksmtuned_node(tmp_path)
    statm = root / "proc" / str(QEMU_PIDS[0]) / "statm"
    statm.unlink()
    os.mkfifo(statm)  # no writer: a read of it waits for good
    # The stuck reader is a daemon thread: no hang at exit.
    lines = watch_explain_a_stop_and_a_start(root, tmp_path, exit_within=10)
    assert all(" cause: unknown" in line for line in lines), lines
    assert all(WATCH_LINE.match(line.split(" cause: ")[0]) for line in lines)


def test_transitions_from_a_running_exporter(tmp_path: Path) -> None:
    with exporter_after_a_start(tmp_path) as exporter:
        r = run_cli("transitions", f"--url=http://127.0.0.1:{exporter.port}")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    _header, row, _blank, starts, _rule = r.stdout.splitlines()
    # 9590: MemFree + Buffers + Cached
    assert row.split(maxsplit=2)[2] == (
        "stopped -> running    25743     6318  committed ? + threshold ? vs total 32061, "
        "free 9590 vs threshold ?  unknown"
    )
    # This /proc has no pid 1 (as when hidden) and there is no ksmtuned.conf: unknown.
    assert starts == (
        "starts (-> running): 1 (unknown 1); free memory min 6318 MB, median 6318 MB, max 6318 MB"
    )


def test_transitions_errors_are_one_line(tmp_path: Path) -> None:
    # A port bound but not listening, held for the test: a connection to it is refused,
    # and no other process can take it meanwhile.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        r = run_cli("transitions", f"--url=http://127.0.0.1:{port}")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (
        f"ksm-exporter transitions: cannot read http://127.0.0.1:{port}/transitions: "
        "Connection refused\n"
    )
    r = run_cli("transitions", "--url=127.0.0.1:9941")
    assert (r.returncode, r.stderr) == (
        1,
        "ksm-exporter transitions: --url 127.0.0.1:9941/transitions: "
        "not an http:// or https:// URL\n",
    )
    r = run_cli("transitions", f"--state.file={tmp_path}/absent")
    assert (r.returncode, r.stderr) == (
        1,
        f"ksm-exporter transitions: cannot read {tmp_path}/absent: No such file or directory\n",
    )
    # A broken line: what can be read is printed, the rest named on one line, exit 1.
    state = tmp_path / "state.jsonl"
    good = {"timestamp": 1.0e9, "from": "stopped", "to": "running", "run": 1}
    state.write_text(json.dumps(good) + '\n{"timestamp": 2\n')
    r = run_cli("transitions", f"--state.file={state}")
    assert r.returncode == 1 and "stopped -> running" in r.stdout
    assert (
        r.stderr.startswith(f"ksm-exporter transitions: {state}: skipped 1 lines (too short)")
        and r.stderr.count("\n") == 1
    )
    r = run_cli("transitions", f"--state.file={state}", "--url=http://127.0.0.1:1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
