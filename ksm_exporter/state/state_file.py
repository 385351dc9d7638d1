"""--state.file: the transition history, kept across restarts.

One JSON object per line. Each save writes the whole (bounded) history to a private
temporary file beside it (created with O_EXCL, so never through a symlink or into a file
someone else made), fsyncs it, renames it over the state file and fsyncs the directory.
rename(2) is atomic, so whether SIGTERM or SIGKILL strikes, the file on disk is the old
history or the new one, never a torn mix; and a transition is logged only after its save
returned, so nothing logged is lost.

A disk, an editor or another program may leave anything in the file, so a load trusts
nothing: it reads bytes, at most the last READ_LIMIT_BYTES, line by line; each line that
is not a well-formed entry (Transition.from_json) is dropped and counted, valid ones are
kept in order, and one log line sums up what was dropped. The dropped lines disappear at
the next save, which writes the valid entries only. A file that cannot be read at all is
never overwritten: what is in it was not seen, so it cannot be kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ksm_exporter.model import bounded_json
from ksm_exporter.readers import open_regular_file
from ksm_exporter.state.transitions import Transition

log = logging.getLogger(__name__)

# An entry is ~350 bytes, and at least {"run":0,"timestamp":0,"to":"stopped"}: a line
# shorter or longer is not one and is dropped without parsing it.
MIN_LINE_BYTES = 38
MAX_LINE_BYTES = 4096
# Only the end of a larger file is read: 8 MiB holds over 20,000 entries, and parsing it
# takes well under a second even when every line is a JSON object, so no file can hold
# up the start past systemd's timeout.
READ_LIMIT_BYTES = 8 * 2**20
NOT_READ = f"before the last {READ_LIMIT_BYTES >> 20} MiB, not read"


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Lines dropped at load, and loads and saves that failed; exported as a counter.
        self.errors = 0
        self._lock = threading.Lock()
        # Set when the file exists but could not be read: it is then never replaced.
        self._unread: str | None = None

    def load(self) -> list[Transition]:
        """The saved history, oldest first; lines that are not entries are dropped and
        counted. Never raises: a start must succeed whatever the file holds."""
        try:
            data, skipped = self._read()
        except FileNotFoundError:
            return []
        except OSError as e:
            self._unread = e.strerror or str(e)
            self.errors += 1
            log.error(
                "cannot read state file %s: %s; starting with an empty history, and the "
                "file will not be overwritten (fix or remove it, then restart)",
                self.path,
                self._unread,
            )
            return []
        out, dropped = parse_lines(data)
        if skipped:
            dropped[NOT_READ] = 1
        if dropped:
            self.errors += sum(dropped.values())
            log.warning(
                "state file %s: %d lines dropped (%s), %d entries kept; the dropped lines "
                "are removed at the next save",
                self.path,
                sum(dropped.values()),
                ", ".join(f"{why}: {n}" for why, n in sorted(dropped.items())),
                len(out),
            )
        self._remove_stale_temporaries()
        return out

    def _read(self) -> tuple[bytes, bool]:
        return read_tail(self.path)

    def save(self, history: Iterable[Transition]) -> bool:
        """Replace the file with `history`; False (and counted, logged) when it failed."""
        with self._lock:
            if self._unread is not None:
                self.errors += 1
                return False  # said at load; a log line per transition would say no more
            try:
                # to_json formats the time: ValueError, OverflowError or OSError for one
                # no calendar holds. Loaded entries are checked, but a save must not raise.
                data = "".join(json.dumps(t.to_json(), sort_keys=True) + "\n" for t in history)
                self._replace(data.encode("utf-8"))
            except (OSError, ValueError, OverflowError) as e:
                self.errors += 1
                log.error("cannot save state file %s: %s (history kept in memory)", self.path, e)
                return False
        return True

    def _replace(self, data: bytes) -> None:
        replace_file(self.path, data)

    def _remove_stale_temporaries(self) -> None:
        remove_stale_temporaries(self.path)


def _prefix(path: Path) -> str:
    return f".{path.name}."


def replace_file(path: Path, data: bytes) -> None:
    """Write `data` to a private temporary file beside `path`, fsync it, rename it over
    `path` and fsync the directory. Raises OSError."""
    # mkstemp: O_CREAT|O_EXCL with a random name, so a symlink or a file planted
    # beside the state file is never followed or truncated.
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o640)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)  # replaces a symlink itself, never its target
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files of saves that SIGKILL interrupted: ours, by their exact shape
    (mkstemp's 8 random characters), so no file of anyone else is touched."""
    ours = re.compile(re.escape(_prefix(path)) + r"[a-z0-9_]{8}\.tmp")
    with contextlib.suppress(OSError):
        for name in os.listdir(path.parent):
            if ours.fullmatch(name):
                with contextlib.suppress(OSError):
                    os.unlink(path.parent / name)  # unlink never follows a link


def read_tail(path: Path) -> tuple[bytes, bool]:
    """The file's last READ_LIMIT_BYTES from the first line that starts in them, and
    whether anything before was left. A FIFO or a device put there must not block the
    reader (the daemon's start, `ksm-exporter transitions`): open_regular_file refuses it.
    Raises OSError."""
    fd, st = open_regular_file(path)
    try:
        # One byte before the window too: it says whether the window starts a line.
        start = max(0, st.st_size - READ_LIMIT_BYTES - 1)
        chunks = []
        offset = start
        while offset < st.st_size and (chunk := os.pread(fd, st.st_size - offset, offset)):
            chunks.append(chunk)
            offset += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if start:  # the window's first line, unless it starts right there, was cut: not one
        data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
    return data, start > 0


def parse_lines(data: bytes) -> tuple[list[Transition], Counter[str]]:
    """The well-formed entries of `data`, in order, and how many lines were dropped why."""
    out: list[Transition] = []
    dropped: Counter[str] = Counter()
    short = 0
    for raw in data.split(b"\n"):
        if len(raw) < MIN_LINE_BYTES:  # most of a garbage file: dropped at the least cost
            if raw.strip():
                short += 1
            continue
        line = raw.strip()
        if len(line) < MIN_LINE_BYTES:
            short += 1
            continue
        if len(line) > MAX_LINE_BYTES:
            dropped["too long"] += 1
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            dropped["not UTF-8"] += 1
            continue
        try:
            value = bounded_json.loads(text)  # [[[[... nested too deep: not JSON either
        except ValueError:
            dropped["not JSON"] += 1
            continue
        try:
            out.append(Transition.from_json(value))
        except ValueError as e:
            dropped[str(e)] += 1
    if short:
        dropped["too short"] = short
    return out, dropped
