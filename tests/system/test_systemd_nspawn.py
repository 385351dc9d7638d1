"""The .deb under a real systemd: Debian 12 and 13 booted with systemd-nspawn
(tests/support/nspawn.py), the package built here installed with apt, the unit as shipped,
driven with systemctl and journalctl as an operator would.

One container per Debian release. Debian 13 (systemd 257, Python 3.13) runs what depends
on the release: start and readiness, the journal entries of real KSM edges, the watchdog,
stop; the rest, which tests the unit's settings and the exporter itself, runs on Debian 12
alone (BOOKWORM_ONLY): Debian 13 adds about 15 s to the module's 40 s.

Two settings differ from a fresh install, as an operator would set them:
/etc/default/ksm-exporter listens on loopback port 0 (the port each start binds is read
from its "listening" journal entry) with a web config (basic auth, for the reload test),
and a drop-in shortens WatchdogSec and RestartSec so the watchdog tests take seconds, not
minutes (the bounds below are read back from systemd, not assumed).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ksm_exporter.experiment.ksm_settings import KsmUnavailable, exclusive_ksm
from tests.support import FIXTURES, REAL_KSM, http_get, listening_ports, parse_samples, wait_until
from tests.support.nspawn import SUITES, Container, booted, built_deb, cannot_boot

pytestmark = pytest.mark.packaging

UNIT = "ksm-exporter.service"
DROPINS = Path("etc/systemd/system/ksm-exporter.service.d")
WEB_CONFIG = Path("etc/ksm-exporter/web-config.yml")
WATCHDOG_SEC = 6
PER_VM_SHIPPED = "/usr/share/ksm-exporter/ksm-exporter-per-vm.conf"
QEMU_NAME = "qemu-system-x86"  # what qemu-system-x86_64's process name is cut to
VM = "nspawn-test-vm"
PAGES = 64
# The tests of the unit's settings and of the exporter's own behaviour: once is enough.
BOOKWORM_ONLY = pytest.mark.parametrize("node", ["bookworm"], indirect=True)

# A process named like qemu (prctl PR_SET_NAME) with mergeable memory, the module from the
# installed package; lives until stopped.
FAKE_QEMU = f"""#!/usr/bin/python3
import ctypes, signal, sys
from ksm_exporter.experiment.mergeable import MergeableMemory
ctypes.CDLL(None).prctl(15, b"{QEMU_NAME}", 0, 0, 0)
memory = MergeableMemory({PAGES}, {PAGES}, sys.argv[1].encode())
signal.pause()
"""
# ksmtuned is a bash script: its process name is the script's file name. Fedora's real
# script (the exporter reads the running ksmtuned's rule from it), kept from ever looking
# by a loop before its first line.
FAKE_KSMTUNED = (
    "#!/bin/bash\nwhile sleep 60; do :; done\n"
    + ((FIXTURES / "ksmtuned" / "fedora-ksmtuned").read_text().split("\n", 1)[1])
)


def bcrypt_hash(password: str) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def web_config(password: str) -> str:
    return f"basic_auth_users:\n  prom: '{bcrypt_hash(password)}'\n"


@dataclass
class Node:
    """The container with the exporter's settings in place."""

    c: Container
    port: int = 0  # the running exporter's, from its journal (started() and restarted() set it)
    password: str = "one"

    def get(self, path: str, password: str | None = None) -> tuple[int, str]:
        token = base64.b64encode(f"prom:{password or self.password}".encode()).decode()
        return http_get(
            f"http://127.0.0.1:{self.port}{path}", {"Authorization": f"Basic {token}"}, timeout=10
        )

    def metrics(self) -> dict[str, float]:
        status, body = self.get("/metrics")
        assert status == 200, body
        return parse_samples(body)

    def transitions(self) -> list[dict[str, object]]:
        status, body = self.get("/transitions")
        assert status == 200, body
        return json.loads(body)

    def show(self, *props: str) -> dict[str, str]:
        return self.c.show(UNIT, *props)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def journal(self, *matches: str) -> list[dict[str, str]]:
        out = self.c.run("journalctl", "-u", UNIT, "-o", "json", "--no-pager", *matches).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def messages(self) -> str:
        return "\n".join(str(e.get("MESSAGE")) for e in self.journal())

    def run_entries(self, to: str) -> list[dict[str, str]]:
        """The journal entries of edges of KSM's run into state `to`."""
        return self.journal(f"KSM_RUN_TO={to}")

    def watchdog_timeouts(self) -> int:
        """systemd's "Watchdog timeout" lines for the unit so far."""
        return self.messages().count("Watchdog timeout")

    def running(self) -> bool:
        d = self.show("ActiveState", "MainPID")
        return d["ActiveState"] == "active" and d["MainPID"] != "0"

    def security(self) -> str:
        r = self.c.run("systemd-analyze", "security", "--no-pager", UNIT, check=False)
        assert "Overall exposure level" in r.stdout, r.stdout + r.stderr
        return r.stdout

    def restarted(self, old_pid: int, timeout: float) -> int:
        wait_until(
            lambda: self.running() and self.main_pid() != old_pid,
            timeout=timeout,
            interval=0.2,
            what="systemd to restart the exporter",
        )
        wait_until(self.listening, timeout=30, interval=0.2, what="the restarted exporter to serve")
        return self.main_pid()

    def started(self) -> None:
        """Start the unit if it is not running (each test can run alone) and wait until it
        serves."""
        self.c.run("systemctl", "start", UNIT, timeout=60)
        wait_until(self.listening, timeout=30, interval=0.2, what="the exporter to serve")

    def journal_port(self) -> int | None:
        """The port in the running exporter's "listening" journal entry; None before it."""
        pid = self.main_pid()
        entries = self.journal(f"_PID={pid}", "MESSAGE=listening") if pid else []
        return int(entries[-1]["KSM_ADDRESS"].rpartition(":")[2]) if entries else None

    def listening(self) -> bool:
        port = self.journal_port()
        if port is None:
            return False
        self.port = port
        try:
            return self.get("/-/healthy")[0] == 200
        except OSError:
            return False


@pytest.fixture(scope="module", params=SUITES)
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    why = cannot_boot()
    if why:
        pytest.skip(why)
    if not REAL_KSM.is_dir():
        pytest.skip(f"no {REAL_KSM}: the unit's ConditionPathIsDirectory would skip it")
    deb = built_deb()
    suite = request.param
    workdir = tmp_path_factory.mktemp(f"nspawn-{suite}")
    started = time.monotonic()
    with booted(f"ksm-exporter-test-{os.getpid()}", workdir, (deb,), suite) as c:
        versions = c.run(
            "dpkg-query", "-W", "-f=${Package} ${Version}, ", "ksm-exporter", "python3", "systemd"
        ).stdout.rstrip(", ")
        took = time.monotonic() - started
        print(f"\n{suite} booted and package installed in {took:.1f} s ({versions})")
        (c.root / WEB_CONFIG).parent.mkdir(parents=True)
        (c.root / WEB_CONFIG).write_text(web_config("one"))
        (c.root / "etc/default/ksm-exporter").write_text(
            f'ARGS="--web.listen-address=127.0.0.1:0 --web.config.file=/{WEB_CONFIG}"\n'
        )
        (c.root / DROPINS).mkdir(parents=True)
        (c.root / DROPINS / "test-timing.conf").write_text(
            f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\nRestartSec=1s\n"
        )
        for name, text in (("fake-qemu", FAKE_QEMU), ("ksmtuned", FAKE_KSMTUNED)):
            (c.root / "usr/local/bin" / name).write_text(text)
            (c.root / "usr/local/bin" / name).chmod(0o755)
        c.run("systemctl", "daemon-reload")
        yield Node(c)


def test_start_is_active_only_after_ready_and_status_shows_the_line(node: Node) -> None:
    # Type=notify: `systemctl start` returns once READY=1 came, which the exporter sends
    # only when its socket listens: the kernel has it listening at once, and the first
    # request needs no retry.
    node.c.run("systemctl", "start", UNIT, timeout=60)
    assert node.show("ActiveState")["ActiveState"] == "active"
    [node.port] = listening_ports(node.c.host_pid(node.main_pid()))
    assert node.get("/-/healthy")[0] == 200
    # The journal names that port (for an operator, and for the tests that follow).
    assert wait_until(node.journal_port, what="the listening entry") == node.port
    assert node.show("Type")["Type"] == "notify"

    # READY=1 may carry "starting: waiting for the first poll"; the first poll's line follows.
    line = re.compile(r"KSM (running|stopped), \d+ MB saved, \d+ transitions? since start")
    wait_until(
        lambda: line.fullmatch(node.show("StatusText")["StatusText"]),
        timeout=20,
        what="the STATUS line",
    )
    status = node.c.run("systemctl", "status", "--no-pager", UNIT).stdout
    assert re.search(rf'^\s+Status: "{line.pattern}"$', status, re.MULTILINE), status
    print(f"\n$ systemd-analyze security {UNIT}   (the default unit)\n{node.security()}")


def flip_run(node: Node) -> tuple[int, int]:
    """Real KSM `run` 0 -> 1 -> 0 on the host, under the tests' KSM lock (restored after),
    each edge waited for in the journal; how many KSM_RUN_TO=running and =stopped entries
    there were before. Skips where KSM is absent or read-only."""
    node.started()
    try:
        with exclusive_ksm("/sys") as ksm:
            ksm.write("run", 0)
            time.sleep(2)  # a poll or more: the exporter has seen run=0
            before = len(node.run_entries("running")), len(node.run_entries("stopped"))
            ksm.write("run", 1)
            wait_until(
                lambda: len(node.run_entries("running")) > before[0],
                timeout=20,
                what="a KSM_RUN_TO=running entry",
            )
            ksm.write("run", 0)
            wait_until(
                lambda: len(node.run_entries("stopped")) > before[1],
                timeout=20,
                what="a KSM_RUN_TO=stopped entry",
            )
    except KsmUnavailable as e:
        pytest.skip(str(e))
    return before


@pytest.mark.kernel
def test_each_run_edge_is_one_journal_entry_with_memory(node: Node) -> None:
    before_running, before_stopped = flip_run(node)
    running, stopped = node.run_entries("running"), node.run_entries("stopped")
    assert len(running) == before_running + 1 and len(stopped) == before_stopped + 1
    for entry in (running[-1], stopped[-1]):
        for field in ("KSM_MEM_USED_BYTES", "KSM_MEM_FREE_BYTES", "KSM_MEM_AVAILABLE_BYTES"):
            assert int(entry[field]) > 0, (field, entry)
    assert running[-1]["KSM_RUN_FROM"] == "stopped" and stopped[-1]["KSM_RUN_FROM"] == "running"


def watchdog_bound(node: Node) -> float:
    """How long systemd may take from the last ping to a running successor: the watchdog,
    then the abort (TimeoutAbortSec, at most TimeoutStopSec), then RestartSec; plus 30 s
    for a busy machine."""
    d = node.show("WatchdogUSec", "TimeoutAbortUSec", "RestartUSec")
    assert d["WatchdogUSec"] == f"{WATCHDOG_SEC}s", d

    def seconds(v: str) -> float:
        m = re.fullmatch(r"(?:(\d+)min ?)?(?:(\d+(?:\.\d+)?)s)?", v)
        assert m, v
        return int(m.group(1) or 0) * 60 + float(m.group(2) or 0)

    return sum(seconds(d[k]) for k in d) + 30


@pytest.mark.kernel
def test_frozen_exporter_is_killed_by_the_watchdog_and_keeps_its_history(node: Node) -> None:
    node.started()
    if not node.transitions():  # run alone: make some history first
        flip_run(node)
    before = node.transitions()
    assert before, "no transition recorded"
    pid = node.main_pid()
    restarts = int(node.show("NRestarts")["NRestarts"])
    timeouts = node.watchdog_timeouts()
    os.kill(node.c.host_pid(pid), signal.SIGSTOP)
    node.restarted(pid, watchdog_bound(node))
    assert int(node.show("NRestarts")["NRestarts"]) == restarts + 1
    assert node.watchdog_timeouts() == timeouts + 1
    # The state file (--state.file in the unit's ExecStart) brought the history back.
    assert node.transitions()[: len(before)] == before


# PTRACE_SEIZE then PTRACE_INTERRUPT stop one thread, not the process: the HTTP loop stops
# while the watcher thread polls on. The tracer stays until the thread is gone (its exit
# would resume the thread) and keeps it stopped, but lets a signal through as the kernel
# would deliver it (systemd's SIGABRT and SIGKILL must end the process), and reaps the
# thread at its end (else the process lingers as a zombie systemd cannot see go).
FREEZE_THREAD = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
SEIZE, INTERRUPT, CONT, EVENT_STOP, WALL = 0x4206, 0x4207, 7, 128, 0x40000000
tid = int(sys.argv[1])

def ptrace(request, data=0):
    if libc.ptrace(request, tid, None, data) != 0:
        sys.exit(f"ptrace {request:#x}: errno {ctypes.get_errno()}")

ptrace(SEIZE)
ptrace(INTERRUPT)
while True:
    _, status = os.waitpid(tid, WALL)
    if os.WIFEXITED(status) or os.WIFSIGNALED(status):
        break
    if status >> 16 == EVENT_STOP:
        print("stopped", flush=True)
        continue
    ptrace(CONT, os.WSTOPSIG(status))  # a signal for the thread: deliver it
    ptrace(INTERRUPT)
"""


def thread_state(pid: int, tid: int) -> str:
    """R, S, t (stopped by a tracer) ... from /proc/PID/task/TID/stat."""
    return Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(") ", 1)[1][0]


def thread_named(pid: int, name: str) -> int | None:
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == name:
            return int(task.name)
    return None


@BOOKWORM_ONLY
def test_wedged_http_loop_stops_the_watchdog_and_systemd_restarts(node: Node) -> None:
    node.started()
    pid = node.main_pid()
    host_pid = node.c.host_pid(pid)
    tid = thread_named(host_pid, "ksm-http")
    threads = [(t / "comm").read_text().strip() for t in Path(f"/proc/{host_pid}/task").iterdir()]
    assert tid is not None, f"no thread named ksm-http among {threads}"
    timeouts = node.watchdog_timeouts()
    freezer = subprocess.Popen(
        [sys.executable, "-c", FREEZE_THREAD, str(tid)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert freezer.stdout is not None and freezer.stdout.readline() == "stopped\n"
        # That thread alone is stopped (t: by its tracer).
        states = {
            int(t.name): thread_state(host_pid, int(t.name))
            for t in Path(f"/proc/{host_pid}/task").iterdir()
        }
        assert [t for t, state in states.items() if state == "t"] == [tid], states
        node.restarted(pid, watchdog_bound(node))
    finally:
        if freezer.poll() is None:  # the thread lives on: release it
            freezer.kill()
        freezer.wait(10)
    assert node.watchdog_timeouts() == timeouts + 1


@BOOKWORM_ONLY
def test_reload_applies_a_new_web_config_and_keeps_the_old_one_when_broken(node: Node) -> None:
    node.started()
    pid = node.main_pid()
    (node.c.root / WEB_CONFIG).write_text(web_config("two"))
    node.c.run("systemctl", "reload", UNIT)
    wait_until(lambda: node.get("/metrics", "two")[0] == 200, timeout=20, what="the new password")
    assert node.get("/metrics", "one")[0] == 401
    node.password = "two"
    assert node.main_pid() == pid

    (node.c.root / WEB_CONFIG).write_text("basic_auth_users: [\n")
    node.c.run("systemctl", "reload", UNIT)
    wait_until(
        lambda: "reload failed, previous configuration kept" in node.messages(),
        timeout=20,
        what="the journal to say why the reload failed",
    )
    assert re.search(r"reload failed, previous configuration kept: .*web", node.messages())
    assert node.get("/metrics")[0] == 200 and node.get("/metrics", "one")[0] == 401
    assert node.main_pid() == pid and node.running()
    (node.c.root / WEB_CONFIG).write_text(web_config("two"))


@pytest.fixture
def vm_processes(node: Node) -> Iterator[None]:
    """A qemu-named process with mergeable memory running as nobody (setpriv), and a
    ksmtuned running as root, each a transient service in the container."""
    c = node.c
    c.run(
        "systemd-run",
        "--unit=fake-qemu",
        "--",
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "/usr/local/bin/fake-qemu",
        f"ksm-exporter-test-{uuid.uuid4()}",
        "-name",
        f"guest={VM}",
    )
    c.run("systemd-run", "--unit=fake-ksmtuned", "/usr/local/bin/ksmtuned")
    try:
        wait_until(
            lambda: c.run("pgrep", "-u", "nobody", "-x", QEMU_NAME, check=False).returncode == 0,
            timeout=20,
            what="the qemu-named process",
        )
        yield
    finally:
        c.run("systemctl", "stop", "fake-qemu", "fake-ksmtuned", check=False)


@BOOKWORM_ONLY
def test_default_unit_reports_ksmtuned_and_qemu_truthfully(node: Node, vm_processes: None) -> None:
    """Without the drop-in: other users' processes are visible (ksmtuned runs, qemu's RSS
    counts), the 0400 per-process KSM files are not (no ksm_process_* series), and ksmd,
    a host kernel thread outside the container's PID namespace, is absent, not 0."""
    node.c.run("systemctl", "restart", UNIT, timeout=60)
    node.started()

    def complete() -> dict[str, float] | None:
        m = node.metrics()
        return m if m.get("ksmtuned_running") == 1 else None

    m = wait_until(complete, timeout=20, what="ksmtuned_running 1")
    assert m["ksmtuned_committed_bytes"] > 0
    assert not [k for k in m if k.startswith("ksm_process_merging_pages")]
    assert not [k for k in m if k.startswith("ksm_ksmd_")], "ksmd is not visible here"


@BOOKWORM_ONLY
def test_hidden_processes_leave_their_series_absent_not_zero(
    node: Node, vm_processes: None
) -> None:
    """An operator's drop-in with ProtectProc=invisible (what the unit once shipped) hides
    ksmtuned and qemu from the exporter: their series are left out, not reported as 0,
    and a warning in the journal names what hides them."""
    dropin = node.c.root / DROPINS / "hide.conf"
    dropin.write_text("[Service]\nProtectProc=invisible\n")
    try:
        node.c.run("systemctl", "daemon-reload")
        seen = len(node.journal())
        node.c.run("systemctl", "restart", UNIT, timeout=60)
        node.started()
        wait_until(
            lambda: "ksmtuned_running" not in node.metrics(),
            timeout=20,
            what="ksmtuned_running to be absent",
        )
        m = node.metrics()
        assert "ksmtuned_committed_bytes" not in m and "ksmtuned_would_run" not in m, m
        warnings = [
            str(e.get("MESSAGE"))
            for e in node.journal()[seen:]
            if e.get("PRIORITY") == "4" and e.get("SYSLOG_IDENTIFIER") == "ksm-exporter"
        ]
        assert [w for w in warnings if "ProtectProc" in w or "hidepid" in w], warnings
    finally:
        dropin.unlink(missing_ok=True)
        node.c.run("systemctl", "daemon-reload")
        node.c.run("systemctl", "restart", UNIT, timeout=60)


@BOOKWORM_ONLY
def test_per_vm_dropin_reports_the_qemu_process_of_another_user(
    node: Node, vm_processes: None
) -> None:
    dropin = node.c.root / DROPINS / "per-vm.conf"
    node.c.run("cp", PER_VM_SHIPPED, f"/{DROPINS}/per-vm.conf")
    try:
        node.c.run("systemctl", "daemon-reload")
        node.c.run("systemctl", "restart", UNIT, timeout=60)
        node.started()  # on the port this start bound
        print(f"\n$ systemd-analyze security {UNIT}   (with per-vm.conf)\n{node.security()}")
        pid = int(node.c.run("pgrep", "-u", "nobody", "-x", QEMU_NAME).stdout.split()[0])

        def series() -> dict[str, float]:
            return {
                k: v
                for k, v in node.metrics().items()
                if k.startswith("ksm_process_") and f'pid="{pid}"' in k
            }

        found = wait_until(series, timeout=20, what=f"ksm_process_* series of pid {pid}")
        names = {k.split("{")[0] for k in found}
        assert {"ksm_process_merging_pages", "ksm_process_mergeable"} <= names, found
        assert all(f'vm="{VM}"' in k for k in found), found
    finally:
        dropin.unlink(missing_ok=True)
        node.c.run("systemctl", "daemon-reload")
        node.c.run("systemctl", "restart", UNIT, timeout=60)


def test_stop_ends_promptly_with_result_success(node: Node) -> None:
    node.started()
    started = time.monotonic()
    node.c.run("systemctl", "stop", UNIT, timeout=60)
    took = time.monotonic() - started
    d = node.show("ActiveState", "Result", "ExecMainStatus", "TimeoutStopUSec")
    assert d["ActiveState"] == "inactive" and d["Result"] == "success", d
    assert d["ExecMainStatus"] == "0", d
    # Well under TimeoutStopSec (10 s), which would end in SIGKILL and Result=timeout.
    assert took < 8, took
