"""The daemon under systemd: the journal.

Outside systemd it stays out of the way: unless systemd connected stderr to the journal (or
--log.journal says so) logs go to stderr.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping

from systemd import journal

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
    prefix keeps ours apart from journald's own (MESSAGE, PRIORITY, _PID ...)."""
    if key in _FIELD_NAMES:
        return _FIELD_NAMES[key]
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper())
    return name if name.startswith("KSM_") else f"KSM_{name}"


Sender = Callable[..., object]


class JournalHandler(logging.Handler):
    """One journal entry per record. MESSAGE is the message alone (journald keeps the time,
    PRIORITY the level) and each of the record's `fields` becomes a field of its own, so a
    transition's entry carries KSM_RUN_TO and `journalctl KSM_RUN_TO=running` finds it.

    systemd-python's own handler is not used: it would send every LogRecord attribute,
    `fields` as one dict string, and no KSM_* field."""

    def __init__(self, send: Sender = journal.send) -> None:
        super().__init__()
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
                # No journald to take it (--log.journal outside systemd): the line is not
                # lost but goes to stderr in --log.format.
                sys.stderr.write(self.format(record) + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


def journal_handler(forced: bool, environ: Mapping[str, str] = os.environ) -> JournalHandler | None:
    """The journal handler when --log.journal asks for it or systemd runs us with stderr on
    the journal (stderr lines would land there too, as plain text); None: stderr."""
    return JournalHandler() if forced or stderr_is_journal(environ) else None
