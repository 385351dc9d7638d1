"""Per-VM KSM on the real kernel, with real guests (tests/support/guests.py): one started
by a real libvirtd, one as Proxmox VE's qemu-server starts them (named kvm), both Debian's
kernel under qemu's emulator, their memory filled with identical pages; and paused qemu
processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ksm_exporter.experiment.ksm_settings import KsmSettings
from ksm_exporter.readers.processes import ProcessNames, read_process_names
from ksm_exporter.readers.vm_processes import VM_PATTERN, read_vm_processes
from tests.support import FIXTURES, REAL_KSM, run_exporter, wait_until
from tests.support.as_nobody import run_as_nobody
from tests.support.collect import collector, scrape, vm_labels
from tests.support.guests import (
    Guest,
    Unavailable,
    boot_files,
    drain,
    libvirt_with_guest,
    pages_sharing,
    paused_guest,
    tcg_guest,
)

PROC = Path("/proc")
QEMU_NAME = "qemu-system-x86"  # what qemu-system-x86_64's process name is cut to
FILL_MB = 32  # identical pages each guest's init writes (a power of two)


@contextlib.contextmanager
def real_guests(tmp: Path) -> Iterator[tuple[Guest, Guest]]:
    """A guest of libvirt's and one of Proxmox VE's shape, booted and filled; skips where a
    guest cannot run (no qemu, busybox, libvirt, or Debian's kernel)."""
    os.chmod(tmp, 0o755)
    with contextlib.ExitStack() as stack:
        try:
            boot = boot_files(tmp)
            name = "ksm-exporter-test-libvirt"
            libvirt = stack.enter_context(libvirt_with_guest(tmp, boot, name, FILL_MB))
            proxmox = stack.enter_context(tcg_guest(boot, tmp, "vm8006", FILL_MB, proxmox=True))
        except Unavailable as e:
            pytest.skip(str(e))
        libvirt.wait_filled()
        proxmox.wait_filled()
        yield libvirt, proxmox


@contextlib.contextmanager
def paused_qemu() -> Iterator[int]:
    try:
        with paused_guest(kvm=False) as pid:
            yield pid
    except Unavailable as e:
        pytest.skip(str(e))


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
def test_merged_pages_of_real_libvirt_and_proxmox_guests(
    real_ksm: KsmSettings, tmp_path: Path
) -> None:
    if not (PROC / "self" / "ksm_stat").exists():
        pytest.skip("no /proc/PID/ksm_stat (Linux before 6.1)")
    baseline = pages_sharing()
    with real_guests(tmp_path) as (libvirt, proxmox):
        if (REAL_KSM / "advisor_mode").exists():
            real_ksm.write("advisor_mode", "none")  # else pages_to_scan is refused
        real_ksm.write("pages_to_scan", 20000)
        real_ksm.write("sleep_millisecs", 10)
        real_ksm.write("run", 1)
        # libvirt's command line has the options of the one kept as a fixture, in order.
        live = (PROC / str(libvirt.pid) / "cmdline").read_text().split("\0")
        kept = (FIXTURES / "cmdlines" / "libvirt-debian12.txt").read_text().splitlines()
        assert [a for a in live if a.startswith("-")] == [a for a in kept if a.startswith("-")]
        c = collector(PROC, pattern=re.compile(VM_PATTERN))  # the default: both platforms
        # The labels each platform's real command line gives.
        labels = "{" + vm_labels(libvirt.pid, libvirt.name, uuid=libvirt.uuid) + "}"
        kvm_labels = "{" + vm_labels(proxmox.pid, "vm8006", uuid=proxmox.uuid) + "}"

        def merged() -> dict[str, float] | None:
            samples = scrape(c)
            pairs = ((labels, libvirt), (kvm_labels, proxmox))
            done = all(
                samples.get(f"ksm_process_merging_pages{key}", 0) >= guest.fill_pages
                for key, guest in pairs
            )
            return samples if done else None

        samples = wait_until(merged, timeout=60, interval=0.2, what="the filled pages merged")
        page = os.sysconf("SC_PAGESIZE")
        for key in (labels, kvm_labels):
            rmap_items = samples[f"ksm_process_rmap_items{key}"]
            merging = samples[f"ksm_process_merging_pages{key}"]
            assert rmap_items >= merging
            # Profit as the kernel prints it in the same read of ksm_stat: merged (and
            # zero) pages times the page size, less an rmap_item (64 bytes) a page scanned.
            zero = samples[f"ksm_process_zero_pages{key}"]
            profit = (merging + zero) * page - rmap_items * 64
            assert samples[f"ksm_process_profit_bytes{key}"] == profit
            assert samples[f"ksm_process_mergeable{key}"] == 1  # qemu's MADV_MERGEABLE RAM
            assert samples[f"ksm_process_merge_any{key}"] == 0
        with open(f"/proc/{libvirt.pid}/ksm_merging_pages") as f:
            assert int(f.read()) >= libvirt.fill_pages
        # ksmd's own utime+stime, read around the scrape: a short merge may cost it less
        # than one clock tick, so the figure is compared with the kernel's, not with 0.
        ticks = os.sysconf("SC_CLK_TCK")
        before = ksmd_ticks() / ticks
        cpu = scrape(c)["ksm_ksmd_cpu_seconds_total"]
        assert before <= cpu <= ksmd_ticks() / ticks
    drain(real_ksm, baseline)  # the guests are gone: their merged pages go before run does


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_unreadable_and_vanished_on_the_real_kernel() -> None:
    if not (PROC / "self" / "ksm_merging_pages").exists():
        pytest.skip("no per-process KSM files (Linux before 5.19)")
    pattern = re.compile(f"^{QEMU_NAME}$")
    with paused_qemu() as pid:
        names = only(pid)

        def read() -> object:  # ksm_stat is 0400, and the guest is root's
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
    with paused_qemu() as pid:
        os.kill(pid, signal.SIGKILL)  # it dies; nobody reaps it until it is stopped
        stat = PROC / str(pid) / "stat"
        wait_until(lambda: stat.read_text().split(") ")[1][0] == "Z", what="a zombie")
        names = only(pid)  # a zombie keeps its name
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
        paused_qemu(),
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
