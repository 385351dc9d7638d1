"""Per-VM KSM on the real kernel: processes named like qemu and like Proxmox VE's kvm, with
their platforms' command lines and MADV_MERGEABLE memory."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ksm_exporter.experiment.ksm_settings import KsmSettings
from ksm_exporter.readers.processes import (
    ProcessNames,
    read_process_names,
    read_pss_kb,
    read_rss_pages,
)
from ksm_exporter.readers.vm_processes import VM_PATTERN, read_vm_processes
from tests.support import REAL_KSM, REPO, run_exporter, wait_until
from tests.support.as_nobody import run_as_nobody
from tests.support.collect import collector, scrape, vm_labels

PROC = Path("/proc")
QEMU_NAME = "qemu-system-x86"  # what qemu-system-x86_64's process name is cut to
VM = "ksm-exporter-test-vm"
# The identifying options of each platform's command line (tests/fixtures/cmdlines/).
LIBVIRT_ARGS = ("-name", f"guest={VM},debug-threads=on", "-uuid", str(uuid.uuid4()))
PROXMOX_VMID = "8006"
PROXMOX_UUID = str(uuid.uuid4())
PROXMOX_ARGS = (
    "-id",
    PROXMOX_VMID,
    "-name",
    "vm8006,debug-threads=on",
    "-smbios",
    f"type=1,uuid={PROXMOX_UUID}",
)
PAGES = 128  # under max_page_sharing (256): one KSM page shares them all

# Names itself (prctl PR_SET_NAME) like qemu or kvm, maps PAGES identical mergeable pages,
# says "ready" and lives until its stdin closes. The platform's options follow on its
# command line, where the exporter reads them.
CHILD = """
import ctypes, sys
from ksm_exporter.experiment.mergeable import MergeableMemory
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
memory = MergeableMemory(int(sys.argv[2]), int(sys.argv[2]), sys.argv[3].encode())
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def qemu_like_process(
    pages: int, name: str = QEMU_NAME, args: tuple[str, ...] = LIBVIRT_ARGS
) -> Iterator[subprocess.Popen[str]]:
    # A pattern of its own, so its pages merge with one another only.
    pattern = f"ksm-exporter-test-{uuid.uuid4()}"
    argv = [sys.executable, "-c", CHILD, name, str(pages), pattern, *args]
    child = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        yield child
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(5)


def only(pid: int) -> ProcessNames:
    """The walk's name for this pid alone: other qemu-like processes (other test runs on
    the machine) do not enter the counts."""
    names = read_process_names(PROC).names
    assert names.get(pid) == QEMU_NAME
    return ProcessNames(names={pid: names[pid]})


def ksmd_ticks() -> int:
    pid = next(p for p, name in read_process_names(PROC).names.items() if name == "ksmd")
    fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


@pytest.mark.kernel
def test_merged_pages_of_a_libvirt_and_a_proxmox_vm(real_ksm: KsmSettings) -> None:
    if not (PROC / "self" / "ksm_stat").exists():
        pytest.skip("no /proc/PID/ksm_stat (Linux before 6.1)")
    with (
        qemu_like_process(PAGES) as child,
        qemu_like_process(PAGES, "kvm", PROXMOX_ARGS) as kvm,
    ):
        if (REAL_KSM / "advisor_mode").exists():
            real_ksm.write("advisor_mode", "none")  # else pages_to_scan is refused
        real_ksm.write("pages_to_scan", 5000)
        real_ksm.write("sleep_millisecs", 10)
        real_ksm.write("run", 1)
        c = collector(PROC, pattern=re.compile(VM_PATTERN))  # the default: both platforms
        labels = "{" + vm_labels(child.pid, VM, uuid=LIBVIRT_ARGS[3]) + "}"
        kvm_labels = "{" + vm_labels(kvm.pid, "vm8006", PROXMOX_VMID, PROXMOX_UUID) + "}"

        def merged() -> dict[str, float] | None:
            samples = scrape(c)
            both = [f"ksm_process_merging_pages{labels}", f"ksm_process_merging_pages{kvm_labels}"]
            return samples if all(samples.get(key) == PAGES for key in both) else None

        samples = wait_until(merged, timeout=25, interval=0.2, what=f"{PAGES} merged pages")
        rmap_items = samples[f"ksm_process_rmap_items{labels}"]
        assert rmap_items >= PAGES
        assert samples[f"ksm_process_zero_pages{labels}"] == 0
        # The kernel's ksm_process_profit, printed in the same read of ksm_stat: merged
        # pages times the page size, less an rmap_item (64 bytes on 64-bit) a scanned page.
        profit = PAGES * os.sysconf("SC_PAGESIZE") - rmap_items * 64
        assert samples[f"ksm_process_profit_bytes{labels}"] == profit
        assert samples[f"ksm_process_mergeable{labels}"] == 1
        assert samples[f"ksm_process_merge_any{labels}"] == 0
        with open(f"/proc/{child.pid}/ksm_merging_pages") as f:
            assert int(f.read()) == PAGES
        # ksmtuned's committed memory counts both: the qemu-named one's resident size
        # (Fedora's ksmtuned), the kvm-named one's PSS (Proxmox VE's). Other VMs on the
        # machine may add to it; idle children's memory hardly moves (10% slack).
        rss = read_rss_pages(PROC, child.pid) * os.sysconf("SC_PAGESIZE")
        pss = read_pss_kb(PROC, kvm.pid) * 1024
        assert pss > 0
        committed = scrape(c)["ksmtuned_committed_bytes"]
        assert committed >= 0.9 * (rss + pss)
        # ksmd's own utime+stime, read around the scrape: a short merge may cost it less
        # than one clock tick, so the figure is compared with the kernel's, not with 0.
        ticks = os.sysconf("SC_CLK_TCK")
        before = ksmd_ticks() / ticks
        cpu = scrape(c)["ksm_ksmd_cpu_seconds_total"]
        assert before <= cpu <= ksmd_ticks() / ticks


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_unreadable_and_vanished_on_the_real_kernel() -> None:
    if not (PROC / "self" / "ksm_merging_pages").exists():
        pytest.skip("no per-process KSM files (Linux before 5.19)")
    pattern = re.compile(f"^{QEMU_NAME}$")
    with qemu_like_process(1) as child:
        names = only(child.pid)

        def read() -> object:  # ksm_stat is 0400, and the child is root's
            r = read_vm_processes(PROC, names, pattern, 200)
            return [len(r.processes), r.vanished, r.unreadable]

        assert run_as_nobody(read) == [0, 0, 1]
    # The walk named it; it exited and was reaped before its KSM file was read.
    report = read_vm_processes(PROC, names, pattern, 200)
    assert (report.processes, report.vanished, report.unreadable) == ((), 1, 0)


def test_a_zombie_counts_as_vanished_at_every_read() -> None:
    if not (PROC / "self" / "ksm_merging_pages").exists():
        pytest.skip("no per-process KSM files (Linux before 5.19)")
    pattern = re.compile(f"^{QEMU_NAME}$")
    with qemu_like_process(1) as child:
        assert child.stdin is not None
        child.stdin.close()  # it exits; Popen does not reap it until wait()
        stat = PROC / str(child.pid) / "stat"
        wait_until(lambda: stat.read_text().split(") ")[1][0] == "Z", what="a zombie")
        names = only(child.pid)  # a zombie keeps its name
        reports = [read_vm_processes(PROC, names, pattern, 200) for _ in range(2)]
    assert [(r.processes, r.vanished, r.unreadable) for r in reports] == [((), 1, 0)] * 2


@pytest.mark.kernel
def test_settles_on_the_real_kernel(real_ksm: KsmSettings, tmp_path: Path) -> None:
    if (REAL_KSM / "advisor_mode").exists():
        real_ksm.write("advisor_mode", "none")
    real_ksm.write("pages_to_scan", 5000)
    real_ksm.write("sleep_millisecs", 10)
    real_ksm.write("run", 0)  # so that the exporter sees KSM start
    with (
        qemu_like_process(PAGES),
        run_exporter(None, "--settle.full-scans=2", tmp=tmp_path, interval="50ms") as exporter,
    ):
        wait_until(lambda: exporter.metrics()["ksm_run"] == 0, what="the exporter to see run=0")
        started = time.monotonic()
        real_ksm.write("run", 1)

        def settled() -> dict[str, float] | None:
            samples = exporter.metrics()
            return samples if samples["ksm_settled"] == 1 else None

        samples = wait_until(settled, timeout=20, interval=0.1, what="ksm_settled 1")
        assert 0 < samples["ksm_settle_duration_seconds"] <= time.monotonic() - started
        assert samples["ksm_full_scans_total"] >= 2
