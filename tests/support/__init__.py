"""Shared test helpers: fixture trees, the exporter (or another server) as a real process on
the port it bound itself, a stand-in for systemd's notify socket."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ksm_exporter.daemon.web.server import ExporterHTTPServer, Limits

FIXTURES = Path(__file__).parent.parent / "fixtures"
REPO = Path(__file__).parent.parent.parent
REAL_KSM = Path("/sys/kernel/mm/ksm")


def copy_fixture(name: str, dest: Path) -> Path:
    """A writable copy of tests/fixtures/NAME (the tests flip files in it)."""
    root = dest / name
    shutil.copytree(FIXTURES / name, root, symlinks=True)
    return root


def copy_checkout(dest: Path) -> Path:
    """The checkout's tree at dest, less what git and the builds leave (a build from it sees
    the working tree, uncommitted edits included)."""
    shutil.copytree(
        REPO,
        dest,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    return dest


def write_ksm(root: Path, name: str, value: object) -> None:
    """Rewrite one file of a fixture tree's KSM directory atomically (no torn reads)."""
    path = root / "sys/kernel/mm/ksm" / name
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


def wedge_run(root: Path) -> None:
    """Make `run` a FIFO: a read of it then hangs, like a wedged sysfs read."""
    run = root / "sys/kernel/mm/ksm/run"
    run.unlink()
    os.mkfifo(run)


def unwedge_run(root: Path, value: int) -> None:
    """Answer the hung read with `value`, then make `run` a plain file again so that the
    next polls do not hang."""
    run = root / "sys/kernel/mm/ksm/run"

    def feed() -> None:
        with open(run, "w") as f:
            f.write(f"{value}\n")

    t = threading.Thread(target=feed)
    t.start()
    t.join(5)
    write_ksm(root, "run", value)


@dataclass
class Wedge:
    """A file replaced by a FIFO holding its content back: a read of it hangs in open(),
    like a read of a process's files while its mmap lock is held."""

    path: Path
    content: bytes

    def release(self) -> None:
        """The file comes back, and every read stuck on the FIFO gets its content."""
        fifo = self.path.with_name(self.path.name + ".fifo")
        os.rename(self.path, fifo)  # the stuck reads keep the FIFO's inode
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(self.content)
        os.replace(tmp, self.path)
        try:  # a stuck read waits for a writer; without one, ENXIO: nobody to answer
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            fifo.unlink()
            return
        try:
            os.set_blocking(fd, True)
            os.write(fd, self.content)
        finally:
            os.close(fd)
            fifo.unlink()


def wedge(path: Path) -> Wedge:
    content = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    return Wedge(path, content)


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


# The exporter's "listening" log line names the address it bound (logfmt or JSON).
_LISTENING = re.compile(
    r'(?:msg=listening\b|"msg": "listening").*?\baddress"?[=:] ?"?[^\s",]*:(\d+)'
)


def bound_port(log_text: str) -> int | None:
    """The port of the exporter's "listening" log line; None before that line."""
    m = _LISTENING.search(log_text)
    return int(m.group(1)) if m else None


# exporter-toolkit's line (Prometheus, Alertmanager, node_exporter; level info) names the
# address its listener bound, also for port 0: "Start listening ..." names only the flag's.
_TOOLKIT_LISTENING = re.compile(r'msg="Listening on" address=\S*:(\d+)')


def toolkit_port(log_text: str) -> int | None:
    """The port of exporter-toolkit's "Listening on" log line; None before that line."""
    m = _TOOLKIT_LISTENING.search(log_text)
    return int(m.group(1)) if m else None


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on, as the kernel has them at this moment (none
    once it has exited)."""
    try:
        proc = psutil.Process(pid)
        # net_connections() since psutil 6.0; connections() before (pyproject allows 5.9).
        connections = (getattr(proc, "net_connections", None) or proc.connections)("tcp")
    except psutil.NoSuchProcess:
        return set()
    return {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}


@contextlib.contextmanager
def serving(app: object, web: object = None, **limits: float) -> Iterator[ExporterHTTPServer]:
    """The HTTP server alone, in this process, on a loopback port: `app` stands in for
    ExporterApp, `web` for WebConfig, `limits` are Limits' fields."""
    server = ExporterHTTPServer("127.0.0.1:0", app, web, Limits(**limits))  # type: ignore[arg-type]
    server.serve_in_thread()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def http_get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@dataclass
class RunningExporter:
    proc: subprocess.Popen[str]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str = "/metrics", **kw: object) -> tuple[int, str]:
        return http_get(self.url + path, **kw)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text()

    def metrics(self) -> dict[str, float]:
        """`name{labels}` -> value of one scrape (comments dropped)."""
        status, body = self.get("/metrics")
        assert status == 200, body
        return parse_samples(body)

    def ready(self, timeout: float = 20) -> None:
        """Wait until the readiness probe's path answers 200 (the process must live on)."""

        def healthy() -> bool:
            assert self.proc.poll() is None, self.log()
            try:
                return self.get("/-/healthy")[0] == 200
            except OSError:
                return False

        wait_until(healthy, timeout=timeout, what="the readiness probe's path to answer")


def parse_samples(body: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def loop_turns(server: ExporterHTTPServer, turns: int) -> None:
    """Wait until the server's loop has completed `turns` more turns (idle, it turns at
    least every MAX_POLL_SECONDS)."""
    start = server.heartbeat.beats
    wait_until(lambda: server.heartbeat.beats >= start + turns, what=f"{turns} loop turns")


def requests_read(server: ExporterHTTPServer, n: int) -> None:
    """Wait until the loop has read the first bytes of `n` connections' requests (or TLS
    handshakes): they are no longer idle."""
    wait_until(
        lambda: sum(not c.idle for c in list(server._conns.values())) == n,
        what=f"the loop to read {n} requests",
    )


def exporter_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ksm_exporter", *args]


@contextlib.contextmanager
def listening_process(
    command: list[str],
    log_dir: Path,
    name: str,
    port_in_log: Callable[[str], int | None] = bound_port,
    *,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = 15,
) -> Iterator[RunningExporter]:
    """Start a server told to listen on port 0 (its stdout and stderr in a NAME-*.log of
    log_dir) and read the port it bound from its log with `port_in_log`: no port is picked
    and released for it beforehand, so no other process can take it in between. Stop it
    (SIGTERM, then SIGKILL) on exit."""
    fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=log_dir)
    log_path = Path(path)
    with open(fd, "w") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env
        )
    try:

        def bound() -> int | None:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}: {log_path.read_text()}")
            return port_in_log(log_path.read_text())

        port = wait_until(bound, timeout=timeout, what=f"the port {name} bound, in its log")
        yield RunningExporter(proc, port, log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def run_exporter(
    root: Path | None,
    *extra: str,
    tmp: Path,
    env: dict[str, str] | None = None,
    interval: str = "100ms",
) -> Iterator[RunningExporter]:
    """Start `python -m ksm_exporter` on a fixture tree (root=None: the real /sys and /proc)
    on loopback port 0, the port it bound read from its "listening" log line (so the log
    level must be info or debug); stop it on exit."""
    args = ["--web.listen-address=127.0.0.1:0", f"--watch.interval={interval}"]
    if root is not None:
        args += [f"--path.sysfs={root}/sys", f"--path.procfs={root}/proc"]
    with listening_process(
        exporter_command(*args, *extra), tmp, "exporter", env={**os.environ, **(env or {})}
    ) as exporter:
        yield exporter


@contextlib.contextmanager
def exporter_after_a_start(tmp_path: Path) -> Iterator[RunningExporter]:
    """The exporter on a copy of linux-6.18 (no ksmtuned.conf), once its watcher has
    recorded one start of KSM."""
    root = copy_fixture("linux-6.18", tmp_path)
    no_conf = f"--collector.ksmtuned.config={tmp_path}/absent.conf"
    with run_exporter(root, no_conf, tmp=tmp_path) as exporter:
        write_ksm(root, "run", 1)
        # The watcher records the edge within one interval: wait for it, not for a scrape.
        wait_until(
            lambda: len(json.loads(exporter.get("/transitions")[1])) == 1,
            what="the edge recorded",
        )
        yield exporter


@dataclass
class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket. Records each message with the
    time it came. On READY=1 it asks the kernel at once which TCP ports the sender (known
    from its credentials, as systemd knows it) listens on, and connects to each: a
    server started on port 0 is checked on the port it bound, with nothing picked before."""

    path: Path
    messages: list[tuple[float, str]] = field(default_factory=list)
    ports_at_ready: set[int] = field(default_factory=set)
    port_open_at_ready: bool | None = None
    # Called when READY=1 arrives; what it returns is kept in seen_at_ready.
    at_ready: Callable[[], object] | None = None
    seen_at_ready: object = None

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        creds = struct.Struct("3i")  # struct ucred: pid, uid, gid
        while not self._stop.is_set():
            try:
                raw, ancillary, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(creds.size))
            except socket.timeout:
                continue
            data = raw.decode()
            self.messages.append((time.monotonic(), data))
            if "READY=1" in data.splitlines():
                pids = [
                    creds.unpack(cdata)[0]
                    for level, kind, cdata in ancillary
                    if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
                ]
                if self.at_ready is not None:
                    self.seen_at_ready = self.at_ready()
                self.ports_at_ready = listening_ports(pids[0]) if pids else set()
                self.port_open_at_ready = bool(self.ports_at_ready)
                for port in self.ports_at_ready:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    except OSError:
                        self.port_open_at_ready = False

    def close(self) -> None:
        """Stop receiving; what was sent before (STOPPING=1 of an exited process) is kept."""
        if self._sock.fileno() == -1:  # closed already
            return
        self._stop.set()
        self._thread.join(2)
        self._sock.setblocking(False)
        while True:
            try:
                self.messages.append((time.monotonic(), self._sock.recv(4096).decode()))
            except BlockingIOError:
                break
        self._sock.close()

    def env(self) -> dict[str, str]:
        """The environment of a service notifying here, its watchdog at 0.4 s. WATCHDOG_PID
        left unset: the test cannot know the pid before the spawn, and without it the
        watchdog applies to whoever reads WATCHDOG_USEC (sd_watchdog_enabled(3))."""
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": "400000"}

    def texts(self) -> list[str]:
        return [m for _, m in self.messages]

    def pings(self) -> list[float]:
        return [t for t, m in self.messages if m == "WATCHDOG=1"]

    def statuses(self) -> list[str]:
        return [
            line.removeprefix("STATUS=")
            for m in self.texts()
            for line in m.splitlines()
            if line.startswith("STATUS=")
        ]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        exporter_command(*args), capture_output=True, text=True, cwd=REPO, timeout=30
    )
