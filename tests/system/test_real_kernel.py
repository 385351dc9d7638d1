"""On the machine's real KSM: merged pages seen by the exporter equal sysfs, and every edge
of run 1 -> 0 -> 1 -> 2 -> 0 is counted with its memory. Settings restored by `real_ksm`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ksm_exporter.experiment.ksm_settings import KsmSettings
from ksm_exporter.experiment.mergeable import MergeableMemory
from ksm_exporter.readers.meminfo import read_meminfo
from ksm_exporter.readers.sysfs_ksm import read_ksm
from tests.support import REAL_KSM, run_exporter, wait_until

pytestmark = pytest.mark.kernel

PAGES = 2048


def sysfs_pages_sharing() -> int:
    return int((REAL_KSM / "pages_sharing").read_text())


def test_merged_pages_and_every_edge_on_the_real_kernel(
    real_ksm: KsmSettings, tmp_path: Path
) -> None:
    real_ksm.write("run", 0)
    if real_ksm.read("advisor_mode") != "none":
        real_ksm.write("advisor_mode", "none")  # pages_to_scan is refused under scan-time
    real_ksm.write("pages_to_scan", 5000)
    real_ksm.write("sleep_millisecs", 10)
    with MergeableMemory(PAGES, PAGES), run_exporter(None, tmp=tmp_path, interval="50ms") as exp:
        assert exp.metrics()['ksm_run_state{state="stopped"}'] == 1
        before = sysfs_pages_sharing()

        real_ksm.write("run", 1)
        wait_until(
            lambda: sysfs_pages_sharing() >= before + PAGES // 2,
            timeout=30,
            what="pages_sharing to grow from merged MADV_MERGEABLE pages",
        )
        wait_until(lambda: exp.metrics()["ksm_run"] == 1, what="running seen")

        real_ksm.write("run", 0)  # ksmd stops, merged pages stay: the counters hold still
        stopped = 'ksm_run_transitions_total{cause="other",state="stopped"}'
        wait_until(lambda: exp.metrics()[stopped] == 1, what="the stop recorded")
        m = exp.metrics()
        sysfs = read_ksm(REAL_KSM)
        assert not sysfs.errors
        v = sysfs.values
        assert m["ksm_pages_sharing"] == v["pages_sharing"] >= before + PAGES // 2
        assert m["ksm_pages_shared"] == v["pages_shared"]
        assert m["ksm_pages_unshared"] == v["pages_unshared"]
        assert m["ksm_full_scans_total"] == v["full_scans"]
        assert m["ksm_general_profit_bytes"] == v["general_profit"]
        assert m["ksm_pages_to_scan"] == 5000 and m["ksm_sleep_seconds"] == 0.01
        assert m["ksm_saved_bytes"] == v["pages_sharing"] * m["ksm_page_size_bytes"]
        assert m["ksm_sharing_ratio"] == v["pages_sharing"] / v["pages_shared"]

        # Each state held until the watcher has recorded it: an edge is seen within one
        # --watch.interval (a flip and back within one interval is not an edge it can see).
        def edges() -> float:
            return sum(v for k, v in exp.metrics().items() if k.startswith("ksm_run_transitions"))

        for run in (1, 2, 0):
            seen = edges()
            real_ksm.write("run", run)
            wait_until(lambda n=seen: edges() >= n + 1, what=f"the edge to run={run} recorded")
        m = exp.metrics()
        # This test wrote `run` itself, not ksmtuned: every edge's cause is `other`.
        assert m['ksm_run_transitions_total{cause="other",state="running"}'] == 2
        assert m['ksm_run_transitions_total{cause="other",state="stopped"}'] == 2
        assert m['ksm_run_transitions_total{cause="other",state="unmerging"}'] == 1
        _, body = exp.get("/transitions")
        assert [(t["to"], t["cause"]) for t in json.loads(body)] == [
            ("running", "other"),
            ("stopped", "other"),
            ("running", "other"),
            ("unmerging", "other"),
            ("stopped", "other"),
        ]
        assert m['ksm_run_state{state="stopped"}'] == 1
        mem = read_meminfo(Path("/proc"))
        for state in ("running", "stopped", "unmerging"):
            used = m[f'ksm_last_transition_memory_used_bytes{{state="{state}"}}']
            free = m[f'ksm_last_transition_memory_free_bytes{{state="{state}"}}']
            assert used + free == mem.total  # as on every line of checkKSM_start_time.sh's log
            assert abs(free - mem.free) < mem.total * 0.05
            assert m[f'ksm_last_transition_memory_available_bytes{{state="{state}"}}'] > 0
        log = exp.log()
        assert log.count("KSM is running.") == 2 and log.count("KSM is unmerging.") == 1
    assert real_ksm.read("run") == "0"
