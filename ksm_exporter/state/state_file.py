"""--state.file: the transition history, kept across restarts.

Each save writes the whole (bounded) history to a temporary file, fsyncs it, renames it
over the state file and fsyncs the directory. rename(2) is atomic, so whether SIGTERM or
SIGKILL strikes, the file on disk is the old history or the new one, never a torn mix;
and a transition is logged only after its save returned, so nothing logged is lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ksm_exporter.state.transitions import Transition

log = logging.getLogger(__name__)


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors = 0  # saves and loads that failed; exported as a counter

    def load(self) -> list[Transition]:
        """The saved history, oldest first; unreadable entries are skipped and counted."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as e:
            self.errors += 1
            log.error("cannot read state file %s: %s; starting with an empty history", self.path, e)
            return []
        out: list[Transition] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(Transition.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                self.errors += 1
                log.warning("state file %s line %d skipped: %s", self.path, n, e)
        return out

    def save(self, history: Iterable[Transition]) -> bool:
        """Replace the file with `history`; False (and counted, logged) when it failed."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = "".join(json.dumps(t.to_json(), sort_keys=True) + "\n" for t in history)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                view = memoryview(data.encode("utf-8"))
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            self.errors += 1
            log.error("cannot save state file %s: %s (history kept in memory)", self.path, e)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        return True
