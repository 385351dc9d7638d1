"""A read that never returns, in place of each kind of file the exporter reads (a KSM sysfs
file, meminfo, vmstat, /proc/PID/cmdline, /proc/PID/ksm_stat, ksmd's stat): the real
exporter keeps answering health, answers scrapes by their deadline with the other
collectors' series and the stuck one marked failed, keeps its threads bounded however
many scrapes come, and recovers fully when the read returns."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support import copy_fixture, parse_samples, run_exporter, thread_count, wait_until, wedge

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
