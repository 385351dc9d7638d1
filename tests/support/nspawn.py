"""A Debian container booted with systemd-nspawn, for testing the installed .deb under a
real systemd.

The rootfs comes from mmdebstrap and is cached outside the checkout, under
/var/cache/ksm-exporter-tests/rootfs-<hash of what goes into it>, rebuilt when missing or
older than a week. Each boot runs on an overlay over it (the cache stays as built), so
installing the .deb and whatever the tests change vanish with the container.

Run as a script it only builds (or reuses) the rootfs of each suite named (default: all)
and prints where and how long:
    python -m tests.support.nspawn [bookworm|trixie]...
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from ksm_exporter import __version__

REPO = Path(__file__).parent.parent.parent

CACHE = Path(os.environ.get("KSM_EXPORTER_TEST_CACHE", "/var/cache/ksm-exporter-tests"))
# Debian 12 (Python 3.11, systemd 252; Proxmox VE 8) and 13 (Python 3.13, systemd 257;
# Proxmox VE 9): the .deb built here installs and runs on both.
SUITES = ("bookworm", "trixie")


def mirrors(suite: str) -> tuple[str, ...]:
    """The same archive this machine's apt uses (/etc/apt/sources.list.d/debian.sources)."""
    return (
        f"deb http://deb.debian.org/debian {suite} {suite}-updates main",
        f"deb http://deb.debian.org/debian-security {suite}-security main",
    )


# systemd as PID 1 and dbus for systemctl; the .deb's dependencies (so installing it needs
# no network); util-linux for setpriv, procps for ps/pgrep, as a user's node has them.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-prometheus-client",
    "python3-psutil",
    "python3-systemd",
    "python3-bcrypt",
    "python3-yaml",
    "util-linux",
    "procps",
)
MAX_AGE = 7 * 24 * 3600  # a week: security updates reach the cache this often


def cached_tree(name: str, key: tuple[str, ...]) -> Path:
    """CACHE/NAME-<hash of key>: a cached artefact's path, new when its inputs change."""
    digest = hashlib.sha256("\n".join(key).encode()).hexdigest()
    return CACHE / f"{name}-{digest[:16]}"


def rootfs_path(suite: str = "bookworm") -> Path:
    return cached_tree("rootfs", ("v1", suite, *mirrors(suite), *sorted(PACKAGES)))


def fresh(path: Path) -> bool:
    """Whether a cached artefact is complete (its .built stamp) and under a week old."""
    stamp = path / ".built" if path.is_dir() else path.with_name(path.name + ".built")
    return stamp.exists() and time.time() - stamp.stat().st_mtime < MAX_AGE


def mmdebstrap(
    suite: str, packages: tuple[str, ...], dest: Path, log: Path | None, *options: str
) -> None:
    """A Debian `suite` with `packages` (and apt) into dest, a directory or a tarball."""
    with open(log or os.devnull, "w") as out:
        subprocess.run(
            [
                "mmdebstrap",
                "--variant=apt",
                "--mode=root",
                f"--include={','.join(packages)}",
                # Shorter boots and a smaller tree: no docs or manuals.
                "--dpkgopt=path-exclude=/usr/share/{doc,man,info,locale}/*",
                *options,
                suite,
                str(dest),
                *mirrors(suite),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=1800,
        )


def ensure_rootfs(log: Path | None = None, suite: str = "bookworm") -> Path:
    """The cached rootfs, built first when missing or stale. One build at a time across
    processes, and none while a container runs on the old tree (booted() holds the lock
    file shared); the new tree replaces the old one only once complete."""
    root = rootfs_path(suite)
    if fresh(root):
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if fresh(root):
            return root
        building = Path(tempfile.mkdtemp(prefix=f"{root.name}.building-", dir=CACHE))
        try:
            mmdebstrap(suite, PACKAGES, building, log, "--format=directory")
            # A machine id of its own (nspawn refuses an empty one for -b on some versions).
            (building / "etc" / "machine-id").write_text("")
            (building / ".built").touch()
            if root.exists():
                shutil.rmtree(root)
            building.rename(root)
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)
    return root


def cannot_boot() -> str | None:
    """Why a container cannot boot here, or None when it can."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter", "dpkg-buildpackage"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/bootstrap installs it)"
    probe = subprocess.run(
        ["unshare", "--pid", "--mount", "--uts", "--ipc", "--fork", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"no namespaces for a container here: {probe.stderr.strip()}"
    return None


@functools.cache
def built_deb() -> Path:
    """The .deb of this checkout from scripts/build-deb, built once per test process (the
    packaging tests and the container share it) into a directory removed at exit."""
    out = Path(tempfile.mkdtemp(prefix="ksm-exporter-deb-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    r = subprocess.run(
        [str(REPO / "scripts" / "build-deb"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    deb = out / f"ksm-exporter_{__version__}_all.deb"
    assert deb.exists(), r.stdout[-2000:]
    return deb


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _nspid(pid: int) -> list[int]:
    """The pid in each pid namespace from ours inwards (NSpid of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(n) for n in line.split()[1:]]
    return [pid]


class Container:
    """A booted container: `run` executes a command inside it (nsenter into the namespaces
    of its PID 1), `root` is its file system as the host sees it."""

    # Every namespace of its PID 1 but the user namespace (nspawn without -U has none).
    NSENTER = ("nsenter", "-m", "-u", "-i", "-n", "-p", "-C")
    ENV: ClassVar[dict[str, str]] = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C.UTF-8",
        "SYSTEMD_COLORS": "0",
        "SYSTEMD_PAGER": "",
        "DEBIAN_FRONTEND": "noninteractive",
    }

    def __init__(self, name: str, root: Path, leader: int) -> None:
        self.name = name
        self.root = root
        self.leader = leader

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = [f"{k}={v}" for k, v in self.ENV.items()]
        r = subprocess.run(
            [*self.NSENTER, f"--target={self.leader}", "--", "env", "-i", *env, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}: {r.stdout}{r.stderr}")
        return r

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show -p ...` as a dict."""
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def host_pid(self, pid: int) -> int:
        """The host's pid of the container's process `pid`."""
        ns = os.readlink(f"/proc/{self.leader}/ns/pid")
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if _nspid(int(entry.name))[-1] == pid and os.readlink(entry / "ns/pid") == ns:
                        return int(entry.name)
        raise LookupError(f"no host pid for the container's pid {pid}")


# --register=no --keep-unit: no machined or host systemd needed (a CI runner's PID 1 need
# not be systemd); the container runs in our cgroup.
NSPAWN = ("systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--console=read-only")


@contextlib.contextmanager
def booted(
    name: str, workdir: Path, packages: tuple[Path, ...] = (), suite: str = "bookworm"
) -> Iterator[Container]:
    """Boot the cached rootfs of `suite` (on an overlay in workdir) with systemd-nspawn -b
    and install `packages` (.deb files) with apt once it runs; shut it down and unmount on
    exit.

    The host's network is shared (the host scrapes 127.0.0.1) and so is /sys: nspawn
    mounts the kernel's sysfs read-only, so /sys/kernel/mm/ksm inside shows what the
    host writes and the container cannot change it."""
    lower = ensure_rootfs(workdir / "mmdebstrap.log", suite)
    upper, work, root = (workdir / d for d in ("upper", "work", "root"))
    console = workdir / "console.log"
    with contextlib.ExitStack() as cleanup:  # undone in reverse: halt, unmount, unlock
        # Shared while the overlay uses the tree: a rebuild (exclusive) waits for it.
        in_use = cleanup.enter_context(open(CACHE / ".lock"))
        fcntl.flock(in_use, fcntl.LOCK_SH)
        for d in (upper, work, root):
            d.mkdir()
        overlay = f"lowerdir={lower},upperdir={upper},workdir={work}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", overlay, str(root)], check=True)
        cleanup.callback(_remove_overlay, root, upper, work)
        for deb in packages:
            shutil.copy(deb, root / "root" / deb.name)
        with open(console, "wb") as out:
            nspawn = subprocess.Popen(
                [*NSPAWN, f"--directory={root}", f"--machine={name}"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        cleanup.callback(_halt, nspawn)

        def leader() -> int | None:
            if nspawn.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited: {console.read_text()[-3000:]}")
            todo = _children(nspawn.pid)
            while todo:
                pid = todo.pop()
                with contextlib.suppress(OSError):
                    ids = _nspid(pid)
                    if len(ids) > 1 and ids[-1] == 1:
                        return pid
                todo += _children(pid)
            return None

        container = Container(name, root, _wait(leader, 60, "the container's PID 1"))

        def up() -> str | None:
            # Refused until PID 1 listens on its private socket: asked again until then.
            state = container.run(
                "systemctl", "is-system-running", "--wait", check=False, timeout=120
            ).stdout.strip()
            return state if state in ("running", "degraded") else None

        _wait(up, 120, "the container's systemd to finish booting")
        for deb in packages:
            container.run(
                "apt-get", "install", "--yes", "--quiet", f"/root/{deb.name}", timeout=180
            )
        yield container


def _halt(nspawn: subprocess.Popen[bytes]) -> None:
    if nspawn.poll() is None:
        nspawn.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to halt
        try:
            nspawn.wait(60)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait()


def _remove_overlay(root: Path, upper: Path, work: Path) -> None:
    subprocess.run(["umount", "--lazy", str(root)], check=False)
    shutil.rmtree(upper, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return result


if __name__ == "__main__":
    for suite in sys.argv[1:] or SUITES:
        started = time.monotonic()
        path = ensure_rootfs(Path("/dev/stderr"), suite)
        print(f"{suite}: {path} ready after {time.monotonic() - started:.0f} s")
