"""Log lines noted by scrapes and written by the watcher thread.

A scrape reads and renders only; when it notices something worth a log line (a file that
started failing, a collector stuck on a read) it notes it here, and the watcher thread,
the one writer, logs the notes at its next poll."""

from __future__ import annotations

import logging
import threading

# Notes kept while nobody flushes (a stalled watcher): enough for every file and collector.
MAX_PENDING = 200


class Notices:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[logging.Logger, logging.LogRecord]] = []

    def note(self, logger: logging.Logger, level: int, msg: str, *args: object) -> None:
        """Like logger.log(), later: the record keeps the time and place of this call."""
        if not logger.isEnabledFor(level):
            return
        fn, lno, func, _ = logger.findCaller(stacklevel=2)
        record = logger.makeRecord(logger.name, level, fn, lno, msg, args, None, func)
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                return  # past the cap, a stalled watcher's notes say nothing new
            self._pending.append((logger, record))

    def flush(self) -> None:
        """Log what was noted, in order (the watcher thread calls this)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for logger, record in pending:
            logger.handle(record)
