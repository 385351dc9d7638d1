"""Write fake /proc/PID directories in the formats the kernel prints (tests and bench)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# /proc/PID/stat flags: PF_KTHREAD | PF_NOFREEZE for a kernel thread (as ksmd has),
# PF_RANDOMIZE | PF_FORKNOEXEC for a user process.
KTHREAD_FLAGS = 0x00208040
USER_FLAGS = 0x00400140


def stat_line(
    pid: int, comm: str, state: str, kernel_thread: bool, utime: int, stime: int, rss: int
) -> str:
    # The 52 fields of Linux 6.x; the ones the exporter reads are set from the arguments.
    ppid, flags = ("2", KTHREAD_FLAGS) if kernel_thread else ("1", USER_FLAGS)
    fields = [str(pid), f"({comm})", state, ppid, str(pid), str(pid), "0", "-1", str(flags)]
    fields += ["100", "0", "0", "0", str(utime), str(stime), "0", "0", "20", "0", "1", "0"]
    fields += ["100", str(rss * 4096), str(rss)] + ["0"] * 28
    return " ".join(fields) + "\n"


def write_process(
    proc: Path,
    pid: int,
    comm: str,
    *,
    cmdline: Sequence[str] = (),
    state: str = "S",
    kernel_thread: bool = False,
    utime: int = 0,
    stime: int = 0,
    rss_pages: int = 0,
    ksm_stat: str | None = None,
    ksm_merging_pages: int | None = None,
) -> Path:
    """A process directory with comm, stat, statm, cmdline and, if given, the KSM files.
    `ksm_stat` is the file's text; a kernel thread or zombie has an empty one."""
    d = proc / str(pid)
    d.mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    (d / "stat").write_text(stat_line(pid, comm, state, kernel_thread, utime, stime, rss_pages))
    write_statm(proc, pid, rss_pages)
    (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in cmdline))
    if ksm_stat is not None:
        (d / "ksm_stat").write_text(ksm_stat)
    if ksm_merging_pages is not None:
        (d / "ksm_merging_pages").write_text(f"{ksm_merging_pages}\n")
    return d


def write_statm(proc: Path, pid: int, rss_pages: int) -> None:
    if rss_pages:
        statm = f"{rss_pages + 1000} {rss_pages} {rss_pages // 10} 500 0 {rss_pages} 0\n"
    else:  # kernel threads and zombies have no memory
        statm = "0 0 0 0 0 0 0\n"
    (proc / str(pid) / "statm").write_text(statm)


def write_meminfo(proc: Path, total_kb: int, free_kb: int, buffers_kb: int = 0) -> None:
    """/proc/meminfo with these figures (Cached 0: ksmtuned's free is MemFree + Buffers)."""
    text = (
        f"MemTotal:       {total_kb} kB\nMemFree:        {free_kb} kB\n"
        f"MemAvailable:   {free_kb + buffers_kb} kB\nBuffers:        {buffers_kb} kB\n"
        "Cached:         0 kB\n"
    )
    tmp = proc / ".meminfo.tmp"
    tmp.write_text(text)
    tmp.replace(proc / "meminfo")  # whole, as the kernel prints it: no torn read


# The pids of write_ksmtuned_node's processes.
INIT_PID = 1
KSMTUNED_PID = 900
QEMU_PIDS = range(2000, 2100)
CONTROLLER_PIDS = {"momd": 950, "virt-handler": 960}


def write_ksmtuned_node(
    proc: Path,
    *,
    total_kb: int,
    free_kb: int,
    qemu_rss_kb: Sequence[int],
    ksmtuned: bool = True,
    ksmtuned_script: str | None = "fedora",
    ksmtuned_state: str = "S",
    controllers: Sequence[str] = (),
    init: bool = True,
    page_size: int = 4096,
) -> Path:
    """A compute node as ksmtuned sees it: meminfo, systemd as pid 1 (absent with
    init=False: what hidepid=2 shows an unprivileged reader), a ksmtuned process (the bash
    script, named after it, in state `ksmtuned_state`, running the real script of the
    distribution `ksmtuned_script`: tests/fixtures/ksmtuned/NAME-ksmtuned, None for no
    script), qemu-kvm processes with the given rss, and the named controllers' processes
    (momd, virt-handler)."""
    proc.mkdir(parents=True, exist_ok=True)
    write_meminfo(proc, total_kb, free_kb)
    if init:
        write_process(proc, INIT_PID, "systemd", cmdline=["/sbin/init"], rss_pages=3000)
    if ksmtuned:
        write_process(
            proc,
            KSMTUNED_PID,
            "ksmtuned",
            cmdline=["/bin/bash", "/usr/sbin/ksmtuned"],
            state=ksmtuned_state,
            rss_pages=900,
        )
        if ksmtuned_script is not None:
            write_ksmtuned_script(proc, KSMTUNED_PID, ksmtuned_script)
    for name in controllers:
        write_process(proc, CONTROLLER_PIDS[name], name, cmdline=[name], rss_pages=9000)
    for i, rss_kb in enumerate(qemu_rss_kb):
        write_process(
            proc,
            QEMU_PIDS[i],
            "qemu-kvm",
            cmdline=vm_cmdline(i),
            rss_pages=rss_kb * 1024 // page_size,
        )
    return proc


KSMTUNED_SCRIPTS = Path(__file__).parent.parent / "fixtures" / "ksmtuned"


def write_ksmtuned_script(proc: Path, pid: int, variant: str) -> Path:
    """/usr/sbin/ksmtuned as process `pid` sees it (/proc/PID/root): the real script of
    `variant` (debian, fedora, proxmox: tests/fixtures/ksmtuned/)."""
    path = proc / str(pid) / "root" / "usr" / "sbin" / "ksmtuned"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((KSMTUNED_SCRIPTS / f"{variant}-ksmtuned").read_bytes())
    return path


def ksm_stat_6_18(rmap_items: int, zero_pages: int, merging_pages: int, page_size: int) -> str:
    """ksm_stat as Linux 6.14+ prints it; profit as the kernel computes it (64-byte rmap_item)."""
    profit = (merging_pages + zero_pages) * page_size - rmap_items * 64
    return (
        f"ksm_rmap_items {rmap_items}\nksm_zero_pages {zero_pages}\n"
        f"ksm_merging_pages {merging_pages}\nksm_process_profit {profit}\n"
        "ksm_merge_any: no\nksm_mergeable: yes\n"
    )


# Names of the processes that are not VMs on a busy compute node.
OTHER_NAMES = (
    "kworker/3:1",
    "bash",
    "sshd",
    "systemd-journal",
    "python3",
    "libvirtd",
    "ovs-vswitchd",
)


def write_compute_node(root: Path, processes: int, vms: int, page_size: int = 4096) -> Path:
    """A procfs of `processes` processes, `vms` of them qemu (libvirt's command line, 6.18's
    ksm_stat; VM number k has 1000*(k+1) merging pages and 8 GiB resident), plus ksmd and
    Fedora's ksmtuned.
    The others get only the comm file: a scrape reads nothing else of them."""
    proc = root / "proc"
    proc.mkdir(parents=True)
    (proc / "meminfo").write_text(
        "MemTotal:       2113528788 kB\nMemFree:        105676439 kB\n"
        "MemAvailable:   211352878 kB\nBuffers:          1048576 kB\nCached:          8388608 kB\n"
    )
    (proc / "vmstat").write_text("nr_free_pages 26419109\ncow_ksm 123456\nksm_swpin_copy 7\n")
    # pid 1 makes the table complete (without it, other users' processes count as hidden).
    write_process(proc, 1, "systemd", cmdline=["/sbin/init"])
    write_process(proc, 37, "ksmd", kernel_thread=True, utime=0, stime=987654)
    every = (processes - 2) // vms
    vm = 0
    for i in range(processes - 2):
        pid = 1000 + i
        if i % every == 0 and vm < vms:
            write_process(
                proc,
                pid,
                "qemu-kvm",
                cmdline=vm_cmdline(vm),
                rss_pages=8 * 262144,
                ksm_stat=ksm_stat_6_18(2 * 262144, 0, 1000 * (vm + 1), page_size),
            )
            vm += 1
        elif i == 1:  # Fedora's ksmtuned, whose rule counts the qemu-kvm processes
            write_process(proc, pid, "ksmtuned", cmdline=["/bin/bash", "/usr/sbin/ksmtuned"])
            write_ksmtuned_script(proc, pid, "fedora")
        else:
            (proc / str(pid)).mkdir()
            (proc / str(pid) / "comm").write_text(OTHER_NAMES[i % len(OTHER_NAMES)] + "\n")
    return proc


def vm_cmdline(vm: int) -> list[str]:
    return [
        "/usr/libexec/qemu-kvm",
        "-name",
        f"guest=instance-{vm:08x},debug-threads=on",
        "-S",
        "-machine",
        "pc-q35-rhel9.2.0,usb=off,dump-guest-core=off",
        "-m",
        "8192",
        "-smp",
        "4,sockets=4,cores=1,threads=1",
    ]
