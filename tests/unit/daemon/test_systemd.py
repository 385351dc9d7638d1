"""The daemon under systemd: sd_notify over a real datagram socket, the watchdog, the journal.

systemd is not PID 1 here and no journald listens, so the exporter's notifications go to a
socket the test binds (as systemd's NOTIFY_SOCKET would be), and journal entries to a fake
sender that records the fields it is given.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ksm_exporter.commands.serve import log_transition
from ksm_exporter.daemon.health import OK, Health, Heartbeat, Liveness
from ksm_exporter.daemon.logging_setup import configure
from ksm_exporter.daemon.systemd import (
    JOURNAL_SOCKET,
    NOTIFY_THREAD,
    JournalHandler,
    ServiceNotifier,
    journal_handler,
    status_line,
    stderr_is_journal,
    watchdog_seconds,
)
from ksm_exporter.daemon.watcher import Watcher
from ksm_exporter.flags.serve import parser as serve_parser
from ksm_exporter.model.derived import MIB, page_size
from ksm_exporter.readers import Paths
from ksm_exporter.readers.meminfo import read_meminfo
from ksm_exporter.state.monitor import KsmMonitor
from ksm_exporter.state.notices import Notices
from ksm_exporter.state.read_errors import ReadErrors
from ksm_exporter.state.transitions import TransitionTracker
from tests.support import (
    FIXTURES,
    NotifySocket,
    bound_port,
    copy_fixture,
    run_exporter,
    wait_until,
    write_ksm,
)
from tests.support.monitor import fixture_monitor

KSM = "sys/kernel/mm/ksm"
KSMTUNED_STOCK_CONF = FIXTURES / "ksmtuned" / "stock.conf"

# --- sd_notify over a real socket ----------------------------------------------------------


def test_ready_status_watchdog_and_stopping(tmp_path: Path, notify_socket: NotifySocket) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    n = notify_socket
    # The exporter's log as READY=1 arrives: it already names the port (bound to :0).
    n.at_ready = lambda: "".join(p.read_text() for p in tmp_path.glob("exporter-*.log"))
    env = n.env()
    with run_exporter(root, tmp=tmp_path, env=env) as exporter:
        wait_until(lambda: n.port_open_at_ready is not None, what="READY=1")
        assert n.texts()[0].startswith("READY=1\n")
        assert n.port_open_at_ready, "READY=1 came before the port accepted connections"
        # The port open at READY is the one the exporter bound and logged, not another.
        assert n.ports_at_ready == {exporter.port}, (n.ports_at_ready, exporter.port)
        assert bound_port(str(n.seen_at_ready)) == exporter.port, n.seen_at_ready
        wait_until(
            lambda: "KSM stopped, 11 MB saved, 0 transitions since start" in n.statuses(),
            what="the first STATUS",
        )
        write_ksm(root, "run", 1)
        wait_until(
            lambda: "KSM running, 11 MB saved, 1 transition since start" in n.statuses(),
            what="STATUS after the start",
        )
        wait_until(lambda: len(n.pings()) >= 6, what="six watchdog pings")
        pings = n.pings()
        # At half of WATCHDOG_USEC (0.2 s). The median, not every gap: a loaded machine
        # may delay one ping, which says nothing about the schedule.
        gaps = sorted(b - a for a, b in zip(pings, pings[1:]))
        assert 0.1 < gaps[len(gaps) // 2] < 0.4, gaps

        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(10) == 0, exporter.log()
    n.close()
    texts = n.texts()
    stopping = texts.index("STOPPING=1\nSTATUS=stopping")
    assert "WATCHDOG=1" not in texts[stopping:]
    # The status changes only when what it says changes.
    statuses = n.statuses()
    assert all(a != b for a, b in zip(statuses, statuses[1:])), statuses


# --- the notifier in-process, with a fake sd_notify ---------------------------------------


@dataclass
class FakeNotify:
    messages: list[str] = field(default_factory=list)

    def __call__(self, message: str) -> bool:
        self.messages.append(message)
        return True

    def pings(self) -> int:
        return self.messages.count("WATCHDOG=1")


def beat_ago(seconds: float) -> Heartbeat:
    """A heartbeat whose loop last turned `seconds` ago."""
    heartbeat = Heartbeat()
    heartbeat.last -= seconds
    return heartbeat


def fixture_watcher(root: Path) -> Watcher:
    notices = Notices()
    monitor = KsmMonitor(
        Paths(root / "sys", root / "proc"), TransitionTracker(), ReadErrors(notices)
    )
    return Watcher(monitor, 0.05, notices)


class Counted:
    """A callable counting its calls: the notifier calls alive() once per watchdog turn
    and status() once per turn of its loop, so a test can wait for turns to pass."""

    def __init__(self, f: Callable[[], Any]) -> None:
        self.f = f
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.f()


def turns_pass(counted: Counted, turns: int) -> None:
    start = counted.calls
    wait_until(lambda: counted.calls >= start + turns, what=f"{turns} turns of the notifier")


def watcher_notifier(
    watcher: Watcher, notify: FakeNotify, env: dict[str, str], **kw: object
) -> tuple[ServiceNotifier, Counted, Counted]:
    """The notifier as serve wires it, with the HTTP loop always turning; and its alive()
    and status(), counted."""
    liveness = Liveness(watcher.health, beat_ago(0.0))
    alive, status = Counted(liveness), Counted(lambda: liveness().why)
    notifier = ServiceNotifier(alive, status, watcher.interval, notify, env, **kw)  # type: ignore[arg-type]
    return notifier, alive, status


def test_watchdog_seconds_follows_sd_watchdog_enabled() -> None:
    pid = os.getpid()
    assert watchdog_seconds({}, pid) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "400000"}, pid) == 0.4
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(pid)}, pid) == 30
    # Meant for another process (we inherited the variables): not ours to answer.
    assert watchdog_seconds({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(pid + 1)}, pid) is None
    for bad in ({"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "soon"}, {"WATCHDOG_USEC": "-5"}):
        assert watchdog_seconds(bad, pid) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "x"}, pid) is None


def test_a_watchdog_pid_of_another_process_disables_pings(tmp_path: Path) -> None:
    watcher = fixture_watcher(copy_fixture("linux-6.18", tmp_path))
    notify = FakeNotify()
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}
    notifier, _, status = watcher_notifier(watcher, notify, env, pid=4242)
    assert notifier.watchdog is None
    notifier.ready()
    turns_pass(status, 6)  # six intervals of the watchdog we were not given
    notifier.stopping()
    assert notify.pings() == 0
    assert notify.messages[0].startswith("READY=1\n")
    assert notify.messages[-1] == "STOPPING=1\nSTATUS=stopping"


def test_notifier_is_inert_without_notify_socket(tmp_path: Path) -> None:
    watcher = fixture_watcher(copy_fixture("linux-6.18", tmp_path))
    notify = FakeNotify()
    notifier, _, _ = watcher_notifier(watcher, notify, {"WATCHDOG_USEC": "100000"})
    notifier.ready()
    notifier.stopping()
    assert notify.messages == [] and notifier.watchdog is None
    assert NOTIFY_THREAD not in [t.name for t in threading.enumerate()]


def test_notifier_answers_the_watchdog_only_while_the_watcher_is_on_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watcher = fixture_watcher(copy_fixture("linux-6.18", tmp_path))
    notify = FakeNotify()
    notifier, alive, _ = watcher_notifier(
        watcher, notify, {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "100000"}
    )
    notifier.ready()
    try:
        wait_until(lambda: notify.pings() >= 3, what="pings")
        watcher.last_poll = time.monotonic() - 60  # as if the last poll were a minute ago
        wait_until(
            lambda: any(
                m.startswith("STATUS=watcher stalled: no poll for 6") for m in notify.messages
            ),
            what="STATUS saying the watcher stalled",
        )
        wait_until(lambda: "no longer answering the systemd watchdog" in caplog.text)
        stalled = notify.pings()
        turns_pass(alive, 3)  # three watchdog turns, each without a ping
        assert notify.pings() == stalled
        watcher.last_poll = time.monotonic()
        wait_until(lambda: notify.pings() > stalled, what="pings to resume")
    finally:
        notifier.stopping()
    assert notify.messages[-1] == "STOPPING=1\nSTATUS=stopping"


def test_watchdog_stops_when_the_http_loop_is_wedged(caplog: pytest.LogCaptureFixture) -> None:
    """The watcher polls on time but the HTTP loop has not turned: no more pings, and the
    status says which part is stuck; pings resume when the loop turns again."""
    heartbeat = Heartbeat()
    watcher_ok = lambda: OK  # noqa: E731
    liveness = Liveness(watcher_ok, heartbeat, http_stall_after=0.5)
    alive = Counted(liveness)
    notify = FakeNotify()
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "100000"}
    notifier = ServiceNotifier(alive, lambda: liveness().why, 0.05, notify, env)
    notifier.ready()
    try:
        wait_until(lambda: notify.pings() >= 2, what="pings while the loop turns")
        heartbeat.last = time.monotonic() - 60  # the loop's last turn a minute ago
        wait_until(
            lambda: "no longer answering the systemd watchdog" in caplog.text,
            what="the watchdog given up",
        )
        assert any(m.startswith("STATUS=HTTP loop stalled: no turn for 6") for m in notify.messages)
        stalled = notify.pings()
        turns_pass(alive, 3)  # three watchdog turns, each without a ping
        assert notify.pings() == stalled
        heartbeat.last = time.monotonic() + 3600  # turning again
        wait_until(lambda: notify.pings() > stalled, what="pings to resume")
    finally:
        notifier.stopping()


def test_liveness_names_each_stuck_part() -> None:
    stalled = lambda: Health(False, "watcher stalled: no poll for 9s")  # noqa: E731
    fine = lambda: OK  # noqa: E731
    assert Liveness(fine, beat_ago(0.5))() == (True, "OK")
    assert Liveness(stalled, beat_ago(0.5))() == (False, "watcher stalled: no poll for 9s")
    assert Liveness(fine, beat_ago(30.0))() == (False, "HTTP loop stalled: no turn for 30s")
    assert Liveness(stalled, beat_ago(30.0))() == (
        False,
        "watcher stalled: no poll for 9s; HTTP loop stalled: no turn for 30s",
    )


def test_status_line_says_state_saved_memory_and_transitions(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    watcher = fixture_watcher(root)
    ok = (True, "OK")
    ksm_dir = root / KSM

    def line() -> str:
        n = sum(watcher.monitor.tracker_state().counts.values())
        return status_line(ok, watcher.last, ksm_dir, n)

    assert line() == "starting: waiting for the first poll"
    watcher.poll_once()
    assert line() == "KSM stopped, 11 MB saved, 0 transitions since start"
    write_ksm(root, "run", 1)
    write_ksm(root, "pages_sharing", 3000 * MIB // page_size())
    watcher.poll_once()
    assert line() == "KSM running, 3000 MB saved, 1 transition since start"
    write_ksm(root, "run", 2)
    watcher.poll_once()
    assert line() == "KSM unmerging, 3000 MB saved, 2 transitions since start"
    stuck = (False, "HTTP loop stalled: no turn for 12s")
    assert status_line(stuck, watcher.last, ksm_dir, 2) == "HTTP loop stalled: no turn for 12s"

    absent = fixture_watcher(copy_fixture("no-ksm", tmp_path))
    absent.poll_once()
    absent_dir = tmp_path / "no-ksm" / KSM
    assert (
        status_line(ok, absent.last, absent_dir, 0)
        == f"KSM not available: cannot read {tmp_path}/no-ksm/{KSM}/run"
    )


# --- the journal ----------------------------------------------------------------------------


@dataclass
class FakeJournal:
    """Stands in for systemd.journal.send: each call is one entry."""

    entries: list[dict[str, object]] = field(default_factory=list)
    fail: bool = False

    def __call__(self, **fields: object) -> None:
        if self.fail:
            raise FileNotFoundError(2, "No such file or directory")
        self.entries.append(fields)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure() replaces the root logger's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_transition_is_one_journal_entry_with_its_fields(
    tmp_path: Path, root_logging: None
) -> None:
    journal = FakeJournal()
    handler = JournalHandler(journal)
    configure("info", "logfmt", handler)
    assert logging.getLogger().handlers == [handler]  # the journal alone: no second copy

    root = copy_fixture("linux-6.18", tmp_path)
    # This /proc holds meminfo alone: ksmtuned's committed memory (the rss of qemu) and
    # whether ksmtuned runs are not to be seen, its threshold and free memory are.
    monitor = fixture_monitor(root, KSMTUNED_STOCK_CONF)
    monitor.add_listener(log_transition)
    monitor.poll()
    write_ksm(root, "run", 1)
    monitor.poll()

    [entry] = journal.entries
    mem = read_meminfo(root / "proc")
    ksm_fields = {k: v for k, v in entry.items() if k.startswith("KSM")}
    assert entry["MESSAGE"] == "KSM is running. 25743 MB used. 6318 MB free."
    assert ksm_fields == {
        "KSM_RUN_FROM": "stopped",
        "KSM_RUN_TO": "running",
        "KSM_RUN": "1",
        "KSM_MEM_USED_BYTES": str(mem.used),
        "KSM_MEM_FREE_BYTES": str(mem.free),
        "KSM_MEM_AVAILABLE_BYTES": str(mem.available),
        "KSM_CAUSE": "unknown",
        "KSMTUNED_THRESHOLD_BYTES": str(mem.total // 1024 * 20 // 100 * 1024),
        "KSMTUNED_FREE_BYTES": str(mem.free + mem.buffers + mem.cached),
    }
    assert entry["PRIORITY"] == "6" and entry["SYSLOG_IDENTIFIER"] == "ksm-exporter"
    assert entry["LOGGER"] == "ksm_exporter" and entry["CODE_FUNC"] == "log_transition"


def test_journal_entries_map_levels_exceptions_and_unknown_values(root_logging: None) -> None:
    journal = FakeJournal()
    configure("debug", "logfmt", JournalHandler(journal))
    log = logging.getLogger("ksm_exporter.test")
    log.debug("polled", extra={"fields": {"ksm_dir": "/sys/kernel/mm/ksm", "err": None}})
    log.warning("skipping pages_shared: not an integer")
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("watcher poll failed")
    debug, warning, error = journal.entries
    # `ksm_` keys keep their name; a None value is an absent field, not the text "None".
    assert debug["PRIORITY"] == "7" and debug["KSM_DIR"] == "/sys/kernel/mm/ksm"
    assert "KSM_ERR" not in debug
    assert warning["PRIORITY"] == "4"
    assert error["PRIORITY"] == "3"
    message = str(error["MESSAGE"])
    assert message.startswith("watcher poll failed\nTraceback")
    assert message.endswith("ValueError: bad value")


def test_journal_unreachable_falls_back_to_stderr(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("info", "logfmt", JournalHandler(FakeJournal(fail=True)))
    logging.getLogger("ksm_exporter").info("listening", extra={"fields": {"version": "0.1.0"}})
    err = capsys.readouterr().err
    assert "level=info source=test_systemd msg=listening version=0.1.0" in err


def test_journal_chosen_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    stream = tmp_path / "stream"
    stream.write_text("")
    other = tmp_path / "other"
    other.write_text("")
    with open(stream, "w") as f:
        st = os.fstat(f.fileno())
        same = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        elsewhere = {"JOURNAL_STREAM": f"{st.st_dev}:{os.stat(other).st_ino}"}
        assert stderr_is_journal(same, f.fileno())
        # A stderr redirected away from the journal keeps the variable, not the match.
        assert not stderr_is_journal(elsewhere, f.fileno())
        assert not stderr_is_journal({}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "1:x"}, f.fileno())
    journald = tmp_path / "journal-socket"
    journald.touch()
    assert isinstance(journal_handler(True, {}, journald), JournalHandler)
    assert journal_handler(False, {}, journald) is None
    # No journald: libsystemd would drop every entry and report success; stderr instead.
    assert journal_handler(True, {}, tmp_path / "absent") is None
    assert serve_parser().parse_args(["--log.journal"]).log_journal is True
    assert serve_parser().parse_args([]).log_journal is False


@pytest.mark.skipif(JOURNAL_SOCKET.exists(), reason="journald runs here")
def test_log_journal_without_journald_logs_to_stderr(tmp_path: Path) -> None:
    """A container has no journald: --log.journal must not make the log vanish (libsystemd
    would take every entry and drop it)."""
    with run_exporter(copy_fixture("linux-6.18", tmp_path), "--log.journal", tmp=tmp_path) as e:
        assert "--log.journal: journald is not running here; logging to stderr" in e.log()
        assert "msg=listening" in e.log()  # what follows comes too


def test_a_field_named_like_a_line_key_does_not_repeat_it(root_logging: None) -> None:
    stream = io.StringIO()
    for fmt in ("logfmt", "json"):
        configure("info", fmt, logging.StreamHandler(stream))
        logging.getLogger("ksm_exporter").info("changed", extra={"fields": {"level": "debug"}})
    logfmt, as_json = stream.getvalue().splitlines()
    assert logfmt.count(" level=") == 1 and logfmt.endswith(" field_level=debug")
    assert json.loads(as_json)["level"] == "info"
    assert json.loads(as_json)["field_level"] == "debug"
