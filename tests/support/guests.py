"""Real qemu guests for the kernel tier: a Debian kernel booted under qemu's emulator with a
busybox initramfs whose init fills N MB of its memory with identical bytes, started by
hand or by a real libvirtd; and a paused guest started as `qemu-system-x86_64
-enable-kvm ... -S`.

Booted guests run under TCG (`-accel tcg`): /dev/kvm here may be a nested device on which a
booted Linux guest hangs, so KVM is used only for the paused guest, whose command line is
what matters. The kernel is Debian's (`apt-get download linux-image-...`, extracted, never
installed), cached under /var/cache/ksm-exporter-tests/ keyed by its package version; the
initramfs is built here from busybox-static. libvirtd runs in a mount namespace of its own
over temporary directories (its sockets, state, logs), with a qemu.conf that needs neither
virtlogd nor cgroups, and is stopped afterwards; its domains are transient.

Run as a script it only fetches (or reuses) the kernel and prints where:
    python -m tests.support.guests
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ksm_exporter.experiment.ksm_settings import KsmSettings
from tests.support import wait_until

CACHE = Path(os.environ.get("KSM_EXPORTER_TEST_CACHE", "/var/cache/ksm-exporter-tests"))
QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
KERNEL_META = "linux-image-amd64"
FILLED = "ksm-guest-filled"  # what init prints once its memory is filled
PAGE = 4096


class Unavailable(RuntimeError):
    """A guest cannot be run here: the reason is the test's skip message."""


def _run(*argv: str, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise Unavailable(f"{' '.join(argv)}: {done.stderr.strip()[-300:]}")
    return done.stdout


def kernel_package() -> tuple[str, str]:
    """The package linux-image-amd64 depends on, and its candidate version."""
    depends = _run("apt-cache", "depends", KERNEL_META)
    package = next(
        (line.split()[1] for line in depends.splitlines() if line.strip().startswith("Depends:")),
        None,
    )
    if package is None:
        raise Unavailable(f"apt-cache depends {KERNEL_META}: no kernel package")
    policy = _run("apt-cache", "policy", package)
    version = next(
        (line.split()[1] for line in policy.splitlines() if "Candidate:" in line), "(none)"
    )
    if version == "(none)":
        raise Unavailable(f"{package}: no candidate version (apt-get update?)")
    return package, version


def guest_kernel() -> Path:
    """Debian's kernel image (vmlinuz), downloaded and extracted once per package version."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise Unavailable("no apt-get/dpkg-deb to fetch Debian's kernel")
    package, version = kernel_package()
    key = hashlib.sha256(f"v1\n{package}={version}".encode()).hexdigest()[:16]
    target = CACHE / f"guest-kernel-{key}" / "vmlinuz"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as d:
        os.chmod(d, 0o755)  # apt's _apt user downloads into it
        _run("apt-get", "download", "-q", f"{package}={version}", cwd=Path(d))
        deb = next(Path(d).glob("*.deb"))
        _run("dpkg-deb", "-x", str(deb), str(Path(d) / "x"))
        vmlinuz = next((Path(d) / "x" / "boot").glob("vmlinuz-*"))
        shutil.copyfile(vmlinuz, target.with_suffix(".tmp"))
        os.replace(target.with_suffix(".tmp"), target)
    return target


# init: busybox's applets, then N MB (fill_mb= on the kernel command line, a power of two:
# parameters the kernel does not know reach init's environment) of the byte K in a file of
# the initramfs root, which lives in the guest's memory; then it idles. One page of K
# doubled by cat: the guest kernel copies, no byte-by-byte loop to emulate.
INIT = f"""\
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
printf '%4096s' '' | tr ' ' K > /fill
pages=1
while [ $pages -lt $((fill_mb * 256)) ]; do
    cat /fill /fill > /next && mv /next /fill && pages=$((pages * 2))
done
echo "{FILLED} $fill_mb"
while :; do sleep 3600; done
"""


def _newc(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    """One entry of a cpio archive in the "newc" format the kernel unpacks."""
    encoded = name.encode() + b"\0"
    fields = (1, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    pad = b"\0" * (-(len(header) + len(encoded)) % 4)
    return header + encoded + pad + data + b"\0" * (-len(data) % 4)


def guest_initramfs(dest: Path) -> Path:
    """busybox-static and INIT as a cpio archive (with /dev/console, init's stdio)."""
    if not BUSYBOX.is_file():
        raise Unavailable(f"no {BUSYBOX} (busybox-static)")
    entries = [
        _newc("dev", 0o040755),
        _newc("dev/console", 0o020600, rdev=(5, 1)),
        _newc("proc", 0o040755),
        _newc("bin", 0o040755),
        _newc("bin/busybox", 0o100755, BUSYBOX.read_bytes()),
        _newc("init", 0o100755, INIT.encode()),
        _newc("TRAILER!!!", 0),
    ]
    dest.write_bytes(b"".join(entries))
    return dest


@dataclass(frozen=True)
class Boot:
    """What a guest boots: Debian's kernel and the filling initramfs."""

    kernel: Path
    initramfs: Path


def boot_files(tmp: Path) -> Boot:
    """The kernel (cached) and an initramfs built in `tmp`. Raises Unavailable."""
    return Boot(guest_kernel(), guest_initramfs(tmp / "initramfs.cpio"))


def require_qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise Unavailable(f"no {QEMU} (qemu-system-x86)")
    return path


def kernel_cmdline(fill_mb: int) -> str:
    return f"console=ttyS0 quiet panic=-1 fill_mb={fill_mb}"


@dataclass
class Guest:
    pid: int
    console: Path  # the serial console's log
    name: str
    uuid: str
    fill_mb: int

    def filled(self) -> bool:
        try:
            return FILLED in self.console.read_text(errors="replace")
        except FileNotFoundError:
            return False

    def wait_filled(self, timeout: float = 60) -> None:
        wait_until(self.filled, timeout=timeout, interval=0.1, what=f"{self.name} filled")

    @property
    def fill_pages(self) -> int:
        return self.fill_mb * 1024 * 1024 // PAGE


def stop_pid(pid: int, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after `timeout`; reaped when it is our child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


@contextlib.contextmanager
def tcg_guest(
    boot: Boot,
    tmp: Path,
    name: str,
    fill_mb: int,
    memory_mb: int = 256,
    proxmox: bool = False,
) -> Iterator[Guest]:
    """A guest booted by hand under the emulator: named as libvirt names guests (-name
    guest=NAME -uuid UUID), or, with `proxmox`, as Proxmox VE's qemu-server starts them
    (/usr/bin/kvm, a link to qemu-system-x86_64, so the process is named kvm; -name NAME
    -smbios type=1,uuid=UUID: tests/fixtures/cmdlines/proxmox-ve.txt, less `-id VMID`,
    an option of Proxmox VE's own qemu that Debian's refuses)."""
    qemu = require_qemu()
    console = tmp / f"{name}.console"
    guest_uuid = str(uuid.uuid4())
    if not proxmox:
        argv = [qemu, "-name", f"guest={name},debug-threads=on", "-uuid", guest_uuid]
    else:
        link = tmp / "kvm"
        if not link.exists():
            link.symlink_to(qemu)
        argv = [str(link), "-name", f"{name},debug-threads=on"]
        argv += ["-smbios", f"type=1,uuid={guest_uuid}"]
    argv += [
        "-accel",
        "tcg",
        "-m",
        str(memory_mb),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{console}",
        "-kernel",
        str(boot.kernel),
        "-initrd",
        str(boot.initramfs),
        "-append",
        kernel_cmdline(fill_mb),
    ]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield Guest(process.pid, console, name, guest_uuid, fill_mb)
    finally:
        stop_pid(process.pid)


@contextlib.contextmanager
def paused_guest(kvm: bool = True, memory_mb: int = 64) -> Iterator[int]:
    """A guest paused before its first instruction (-S), started by its name on PATH:
    `qemu-system-x86_64 -enable-kvm ... -S`, the shape of command line Debian's ksmtuned
    counts (`-accel tcg` with kvm=False: no /dev/kvm needed). Its pid."""
    require_qemu()
    if kvm and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise Unavailable("no usable /dev/kvm")
    accel = ["-enable-kvm"] if kvm else ["-accel", "tcg"]
    argv = [QEMU, *accel, "-m", str(memory_mb), "-S", "-nodefaults", "-display", "none"]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def up() -> bool:  # exec'd (named as qemu) and its memory mapped
            if process.poll() is not None:
                raise Unavailable(f"{' '.join(argv)} exited {process.returncode}")
            status = Path(f"/proc/{process.pid}/status").read_text()
            return "qemu-system-x86" in status and "VmRSS:" in status

        wait_until(up, timeout=20, what="the paused qemu")
        yield process.pid
    finally:
        stop_pid(process.pid)


def pages_sharing() -> int:
    return int(Path("/sys/kernel/mm/ksm/pages_sharing").read_text())


def drain(settings: KsmSettings, baseline: int, timeout: float = 30) -> None:
    """After the guests are gone: KSM run fast until pages_sharing is back to at most
    `baseline` (its value before the guests). ksmd drops the merged pages of exited
    processes only as it scans them; with run=0 pages_sharing would keep its last value."""
    if (settings.dir / "advisor_mode").exists():
        settings.write("advisor_mode", "none")  # else pages_to_scan is refused
    settings.write("pages_to_scan", 20000)
    settings.write("sleep_millisecs", 10)
    settings.write("run", 1)
    wait_until(
        lambda: pages_sharing() <= baseline,
        timeout=timeout,
        interval=0.1,
        what=f"pages_sharing back to {baseline}",
    )


# libvirt's qemu driver without systemd: no virtlogd (console logs to files), no cgroups,
# no private /dev, guests run as root over files only root can read.
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""
LIBVIRTD_CONF = """\
unix_sock_dir = "{sock}"
auth_unix_ro = "none"
auth_unix_rw = "none"
"""
# Where libvirtd keeps state: a tmpfs over each in its namespace, gone with it.
LIBVIRT_DIRS = ("/run", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt")


@dataclass
class Libvirt:
    pid: int
    uri: str
    root: Path  # the daemon's view of the filesystem: /proc/PID/root

    def virsh(self, *args: str) -> str:
        done = subprocess.run(
            ["virsh", "-q", "-c", self.uri, *args], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout


@contextlib.contextmanager
def libvirt_daemon(tmp: Path) -> Iterator[Libvirt]:
    """A real libvirtd (foreground, our child) in a mount namespace of its own (unshare -m)
    with tmpfs over its state directories; its socket in `tmp`."""
    for tool in ("libvirtd", "virsh", "unshare"):
        if shutil.which(tool) is None:
            raise Unavailable(f"no {tool} (libvirt-daemon-system, libvirt-clients)")
    if not Path("/etc/libvirt/qemu.conf").is_file():
        raise Unavailable("no /etc/libvirt/qemu.conf (libvirt-daemon-system)")
    base = tmp / "libvirt"
    sock = base / "sock"
    sock.mkdir(parents=True)
    (base / "qemu.conf").write_text(QEMU_CONF)
    (base / "libvirtd.conf").write_text(LIBVIRTD_CONF.format(sock=sock))
    mounts = [f"mount -t tmpfs tmpfs {d}" for d in LIBVIRT_DIRS if Path(d).is_dir()]
    script = " && ".join(
        [
            "mount --make-rprivate /",
            *mounts,
            f"mount --bind {base}/qemu.conf /etc/libvirt/qemu.conf",
            f"exec libvirtd -f {base}/libvirtd.conf",
        ]
    )
    log = (base / "libvirtd.log").open("w")
    process = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", script], stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    daemon = Libvirt(
        process.pid, f"qemu:///system?socket={sock}/libvirt-sock", Path(f"/proc/{process.pid}/root")
    )
    try:
        wait_until(
            lambda: (sock / "libvirt-sock").exists() or process.poll() is not None,
            timeout=30,
            what="libvirtd's socket",
        )
        if process.poll() is not None:
            raise Unavailable(f"libvirtd exited: {(base / 'libvirtd.log').read_text()[-300:]}")
        yield daemon
    finally:
        stop_pid(process.pid, timeout=15)
        log.close()


DOMAIN = """\
<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory_mb}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>{emulator}</emulator>
    <controller type='usb' model='none'/>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


@contextlib.contextmanager
def libvirt_guest(
    daemon: Libvirt, boot: Boot, tmp: Path, name: str, fill_mb: int, guest_uuid: str = ""
) -> Iterator[Guest]:
    """A transient domain of type qemu (`virsh create`), direct kernel boot, no disk, no
    network; destroyed afterwards, and its qemu killed by pid should that fail."""
    console = tmp / f"{name}.console"
    guest_uuid = guest_uuid or str(uuid.uuid4())
    xml = tmp / f"{name}.xml"
    xml.write_text(
        DOMAIN.format(
            name=name,
            uuid=guest_uuid,
            memory_mb=256,
            kernel=boot.kernel,
            initrd=boot.initramfs,
            cmdline=kernel_cmdline(fill_mb),
            emulator=require_qemu(),
            console=console,
        )
    )
    daemon.virsh("create", str(xml))
    pid_file = daemon.root / "run" / "libvirt" / "qemu" / f"{name}.pid"
    pid = 0
    try:
        wait_until(pid_file.exists, timeout=20, what="the domain's pid file")
        pid = int(pid_file.read_text().strip())
        yield Guest(pid, console, name, guest_uuid, fill_mb)
    finally:
        with contextlib.suppress(RuntimeError):
            daemon.virsh("destroy", name)
        if pid:
            stop_pid(pid)


@contextlib.contextmanager
def libvirt_with_guest(tmp: Path, boot: Boot, name: str, fill_mb: int) -> Iterator[Guest]:
    """A real libvirtd and one transient guest of its, both gone afterwards."""
    with libvirt_daemon(tmp) as daemon, libvirt_guest(daemon, boot, tmp, name, fill_mb) as guest:
        yield guest


def cmdline_fixture(pid: int, source: str) -> str:
    """A process's command line as tests/fixtures/cmdlines/ keeps them: `# source`, then
    one argument per line."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    return textwrap.dedent(f"# {source}\n") + "\n".join(argv) + "\n"


if __name__ == "__main__":
    started = time.monotonic()
    print(guest_kernel(), f"{time.monotonic() - started:.1f}s")
