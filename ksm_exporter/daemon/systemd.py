"""The daemon under systemd: sd_notify (READY, STATUS, WATCHDOG, STOPPING) and the journal.

Outside systemd all of it stays out of the way: without NOTIFY_SOCKET nothing is sent, and
unless systemd connected stderr to the journal (or --log.journal says so) logs go to stderr.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ksm_exporter.daemon.health import Health
from ksm_exporter.daemon.threads import set_native_thread_name
from ksm_exporter.model.derived import mebibytes, run_state, saved_bytes
from ksm_exporter.state.snapshot import Snapshot

log = logging.getLogger(__name__)

SYSLOG_IDENTIFIER = "ksm-exporter"

# --- the journal -------------------------------------------------------------------------


def stderr_is_journal(environ: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """Whether systemd connected stderr to the journal: it then sets JOURNAL_STREAM to that
    stream's `DEVICE:INODE`. A stderr redirected elsewhere (a shell started from a service)
    inherits the variable but does not match it."""
    dev, sep, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def priority(levelno: int) -> int:
    """The syslog priority of a logging level: debug 7, info 6, warning 4, error 3, above 2."""
    for level, prio in (
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
    ):
        if levelno <= level:
            return prio
    return 2


# Record fields whose bare names would say too little among the journal's flat names.
_FIELD_NAMES = {"from": "KSM_RUN_FROM", "to": "KSM_RUN_TO"}


def journal_field(key: str) -> str:
    """`mem_used_bytes` -> KSM_MEM_USED_BYTES: journal field names are upper case, and the
    prefix keeps ours apart from journald's own (MESSAGE, PRIORITY, _PID ...). ksmtuned's
    inputs keep their own prefix: `ksmtuned_free_bytes` -> KSMTUNED_FREE_BYTES."""
    if key in _FIELD_NAMES:
        return _FIELD_NAMES[key]
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper())
    return name if name.startswith(("KSM_", "KSMTUNED_")) else f"KSM_{name}"


Sender = Callable[..., object]


class JournalHandler(logging.Handler):
    """One journal entry per record. MESSAGE is the message alone (journald keeps the time,
    PRIORITY the level) and each of the record's `fields` becomes a field of its own, so a
    transition's entry carries KSM_RUN_TO and `journalctl KSM_RUN_TO=running` finds it.

    systemd-python's own handler is not used: it would send every LogRecord attribute,
    `fields` as one dict string, and no KSM_* field."""

    def __init__(self, send: Sender | None = None) -> None:
        super().__init__()
        if send is None:
            from systemd import journal  # here: libsystemd is loaded only when it is used

            send = journal.send
        self.send = send

    def entry(self, record: logging.LogRecord) -> dict[str, object]:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        entry: dict[str, object] = {
            "MESSAGE": message,
            "PRIORITY": str(priority(record.levelno)),
            "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
            "LOGGER": record.name,
            "THREAD_NAME": record.threadName,
            "CODE_FILE": record.pathname,
            "CODE_LINE": record.lineno,
            "CODE_FUNC": record.funcName,
        }
        for key, value in getattr(record, "fields", {}).items():
            if value is not None:  # an unknown value is an absent field, not "None"
                entry[journal_field(key)] = str(value)
        return entry

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = self.entry(record)
            try:
                self.send(**entry)
            except OSError:
                # journald refused it (gone since start, or the entry too large): the line
                # is not lost but goes to stderr in --log.format.
                sys.stderr.write(self.format(record) + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


# Where journald takes native entries. Without it libsystemd drops every entry silently
# (sd_journal_send returns success): --log.journal where no journald runs (a container)
# must not make the log vanish.
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")


def journal_handler(
    forced: bool, environ: Mapping[str, str] = os.environ, socket: Path = JOURNAL_SOCKET
) -> JournalHandler | None:
    """The journal handler when --log.journal asks for it or systemd runs us with stderr on
    the journal (stderr lines would land there too, as plain text), and journald listens;
    None: stderr."""
    if not (forced or stderr_is_journal(environ)) or not socket.exists():
        return None
    return JournalHandler()


# --- sd_notify -----------------------------------------------------------------------------


def watchdog_seconds(
    environ: Mapping[str, str] = os.environ, pid: int | None = None
) -> float | None:
    """The watchdog interval systemd set for us, as sd_watchdog_enabled(3) reads it, or None.
    WATCHDOG_PID, when set, names the process meant: any other that inherited the
    variables must not ping."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        meant = environ.get("WATCHDOG_PID")
        if meant and int(meant) != (os.getpid() if pid is None else pid):
            return None
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


def status_line(alive: Health, snap: Snapshot | None, ksm_dir: Path, transitions: int) -> str:
    """What `systemctl status` shows under the unit: run state, memory saved and transitions
    since start (from the watcher's latest poll), or which part has stalled."""
    ok, why = alive
    if not ok:
        return why
    if snap is None:
        return "starting: waiting for the first poll"
    if snap.run is None:
        return f"KSM not available: cannot read {ksm_dir}/run"
    sharing = snap.ksm.values.get("pages_sharing")
    saved = "?" if sharing is None else mebibytes(saved_bytes(sharing, snap.page_size))
    edges = "1 transition" if transitions == 1 else f"{transitions} transitions"
    return f"KSM {run_state(snap.run).value}, {saved} MB saved, {edges} since start"


Notify = Callable[[str], object]
NOTIFY_THREAD = "ksm-sd-notify"


class ServiceNotifier:
    """sd_notify(3) for the serve loop: READY=1 once the socket listens, STATUS= whenever
    the status line changes, WATCHDOG=1 every half watchdog interval but only while
    `alive()` says every part makes progress (the watcher polls and the HTTP loop turns),
    so systemd restarts a wedged exporter, STOPPING=1 at shutdown. Does nothing where
    NOTIFY_SOCKET is unset."""

    def __init__(
        self,
        alive: Callable[[], Health],
        status: Callable[[], str],
        interval: float,
        notify: Notify | None = None,
        environ: Mapping[str, str] = os.environ,
        pid: int | None = None,
    ) -> None:
        self.alive = alive
        self.status = status
        self.interval = interval  # how often the status can change
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        if notify is None and self.enabled:
            from systemd import daemon  # here: outside systemd, libsystemd is not loaded

            notify = daemon.notify
        self._notify: Notify = notify or (lambda _: None)
        self.watchdog = watchdog_seconds(environ, pid) if self.enabled else None
        self._status = ""
        self._answering = True
        self._failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=NOTIFY_THREAD, daemon=True)

    def ready(self) -> None:
        if not self.enabled:
            return
        self._status = self.status()
        self._send(f"READY=1\nSTATUS={self._status}")
        self._thread.start()

    def stopping(self) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)
        self._send("STOPPING=1\nSTATUS=stopping")

    def _run(self) -> None:
        set_native_thread_name(NOTIFY_THREAD)
        next_ping = time.monotonic()
        while True:
            if self.watchdog is not None and time.monotonic() >= next_ping:
                self._ping()
                next_ping = time.monotonic() + self.watchdog / 2
            status = self.status()
            if status != self._status:
                self._status = status
                self._send(f"STATUS={status}")
            # The status changes at most once a poll; a ping may be due sooner.
            wait = self.interval
            if self.watchdog is not None:
                wait = min(wait, max(0.0, next_ping - time.monotonic()))
            if self._stop.wait(wait):
                return

    def _ping(self) -> None:
        healthy, why = self.alive()
        if healthy:
            self._send("WATCHDOG=1")
        if healthy != self._answering:
            self._answering = healthy
            if healthy:
                log.info("every part makes progress again; answering the systemd watchdog")
            else:
                log.warning(
                    "%s; no longer answering the systemd watchdog",
                    why,
                    extra={"fields": {"watchdog_seconds": self.watchdog}},
                )

    def _send(self, message: str) -> None:
        try:
            self._notify(message)
        except OSError as e:
            if not self._failed:  # once, not at every ping
                self._failed = True
                log.warning("cannot notify systemd: %s", e)
