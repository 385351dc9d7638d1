"""A read that never returns, in place of each kind of file the exporter reads (a KSM sysfs
file, meminfo, vmstat, /proc/PID/cmdline, /proc/PID/ksm_stat, ksmd's stat): the real
exporter keeps answering health, answers scrapes by their deadline with the other
collectors' series and the stuck one marked failed, keeps its threads bounded however
many scrapes come, and recovers fully when the read returns. A hung read of `run` stalls
the watcher: /-/healthy turns 503 and the systemd watchdog goes unanswered until it
returns. `status` prints the KSM figures when a VM's /proc files hang."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.support import (
    NotifySocket,
    copy_fixture,
    parse_samples,
    run_cli,
    run_exporter,
    thread_count,
    unwedge_run,
    wait_until,
    wedge,
    wedge_run,
)

# file under the fixture tree -> the collectors that read it
HUNG = {
    "sys/kernel/mm/ksm/pages_volatile": {"ksm"},
    "proc/meminfo": {"memory", "ksmtuned"},
    "proc/vmstat": {"vmstat"},
    "proc/1001/cmdline": {"process"},
    "proc/1001/ksm_stat": {"process"},
    "proc/37/stat": {"ksmd"},
}
COLLECTORS = {"ksm", "memory", "transitions", "settle", "process", "ksmd", "vmstat"}
COLLECTORS |= {"ksmtuned", "exporter"}
SCRAPE_TIMEOUT = {"X-Prometheus-Scrape-Timeout-Seconds": "3"}
# Threads of a running exporter: main, watcher, HTTP loop, deadlines, one pool worker per
# collector; a few to spare, none per scrape.
MAX_THREADS = 4 + len(COLLECTORS) + 3


def success(samples: dict[str, float]) -> dict[str, float]:
    prefix = 'ksm_scrape_collector_success{collector="'
    return {k[len(prefix) : -2]: v for k, v in samples.items() if k.startswith(prefix)}


@pytest.mark.parametrize("file", sorted(HUNG))
def test_a_hung_read(tmp_path: Path, file: str) -> None:
    root = copy_fixture("procfs-vms", tmp_path)
    stuck = HUNG[file]
    with run_exporter(root, tmp=tmp_path, interval="200ms") as exp:
        assert set(success(exp.metrics())) == COLLECTORS
        hung = wedge(root / file)
        try:
            status, body = exp.get("/metrics", headers=SCRAPE_TIMEOUT, timeout=10)
            assert status == 200, body
            samples = parse_samples(body)
            expected = {c: float(c not in stuck) for c in COLLECTORS}
            assert success(samples) == expected, file
            assert any(k.startswith("ksm_exporter_build_info") for k in samples)
            if "memory" in stuck:
                assert "ksm_memory_free_bytes" not in samples
                # The watcher reads meminfo too: it stalls, and health says so.
                wait_until(lambda: exp.get("/-/healthy")[0] == 503, what="watcher stalled")
                assert exp.get("/-/healthy", timeout=5)[1].startswith("watcher stalled")
            else:
                assert samples["ksm_memory_free_bytes"] > 0
                assert exp.get("/-/healthy", timeout=5) == (200, "OK\n")
            if "ksm" in stuck:
                assert "ksm_pages_volatile" not in samples and "ksm_up" not in samples
            else:
                assert samples["ksm_pages_sharing"] == 3000
            # Stuck collectors are not started again: threads stay bounded.
            for _ in range(30):
                status, body = exp.get("/metrics", headers=SCRAPE_TIMEOUT, timeout=10)
                # Restarting the stuck read would soon take every worker of the pool.
                assert status == 200 and success(parse_samples(body)) == expected
            assert thread_count(exp.proc.pid) <= MAX_THREADS
            assert f"collector {min(stuck)} is stuck on a read" in exp.log()
        finally:
            hung.release()
        # The read returns: every collector serves again, health is back.
        wait_until(
            lambda: set(success(exp.metrics()).values()) == {1.0}, what="every collector back"
        )
        samples = exp.metrics()
        assert samples["ksm_pages_volatile"] == 12 and samples["ksm_memory_free_bytes"] > 0
        assert samples["ksm_ksmd_cpu_seconds_total"] > 0
        wait_until(lambda: exp.get("/-/healthy") == (200, "OK\n"), what="healthy again")
        assert f"collector {min(stuck)} reads again" in exp.log()
        assert thread_count(exp.proc.pid) <= MAX_THREADS


def test_sigterm_with_a_read_stuck_for_good(tmp_path: Path) -> None:
    """A stuck read must not keep the exporter from stopping."""
    root = copy_fixture("procfs-vms", tmp_path)
    with run_exporter(root, tmp=tmp_path) as exp:
        wedge(root / "sys/kernel/mm/ksm/pages_volatile")  # never released
        status, body = exp.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"})
        assert status == 200 and success(parse_samples(body))["ksm"] == 0
        exp.proc.send_signal(signal.SIGTERM)
        assert exp.proc.wait(20) == 0, exp.log()


def test_status_answers_when_a_vm_process_hangs_its_readers(tmp_path: Path) -> None:
    """A qemu process whose memory map is locked hangs reads of its cmdline, as `ps`: the
    KSM figures are printed all the same, the VMs left out and said so, in time."""
    root = copy_fixture("procfs-vms", tmp_path)
    cmdline = root / "proc" / "1001" / "cmdline"
    cmdline.unlink()
    os.mkfifo(cmdline)  # no writer: a read of it waits for good
    paths = (f"--path.sysfs={root}/sys", f"--path.procfs={root}/proc")
    r = run_cli("status", *paths)
    assert r.returncode == 0
    assert "KSM saved:" in r.stdout and "instance-" not in r.stdout
    assert "did not answer within 5 s" in r.stderr and "VMs left out" in r.stderr
    as_json = json.loads(run_cli("status", "--json", *paths).stdout)
    assert as_json["vms"] is None and "saved_mb" in as_json  # unknown, not "no VMs"


def test_health_turns_503_when_the_watcher_stalls_and_200_when_it_recovers(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    wedge_run(root)
    with run_exporter(root, tmp=tmp_path, interval="100ms") as exporter:
        status, body = exporter.get("/-/healthy")
        assert status == 200, body
        wait_until(lambda: exporter.get("/-/healthy")[0] == 503, timeout=10, what="503")
        assert "watcher stalled" in exporter.get("/-/healthy")[1]
        unwedge_run(root, 1)
        wait_until(lambda: exporter.get("/-/healthy")[0] == 200, timeout=5, what="200")


def test_watchdog_pings_stop_while_the_watcher_is_stalled(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    wedge_run(root)
    n = notify_socket
    with run_exporter(root, tmp=tmp_path, env=n.env()) as exporter:
        wait_until(lambda: n.pings(), what="a first ping")
        # --watch.interval=100ms: stalled once a poll is 2.1 s late (as /-/healthy says).
        wait_until(
            lambda: any(s.startswith("watcher stalled") for s in n.statuses()),
            timeout=10,
            what="STATUS saying the watcher stalled",
        )
        wait_until(
            lambda: "no longer answering the systemd watchdog" in exporter.log(),
            what="the watchdog given up",
        )
        stalled, statuses = len(n.pings()), len(n.statuses())
        # The status counts the stall in seconds: two more of them are five ping intervals.
        wait_until(lambda: len(n.statuses()) >= statuses + 2, what="two more statuses")
        assert len(n.pings()) == stalled
        status, body = exporter.get("/-/healthy")
        assert status == 503 and body.startswith("watcher stalled"), body
        unwedge_run(root, 0)
        wait_until(lambda: len(n.pings()) > stalled + 2, what="pings to resume")
        assert "answering the systemd watchdog" in exporter.log()
