"""What the experiment prints: a line per step, and while KSM settles a progress line,
rewritten in place on a terminal, one line every few seconds into a pipe or a log."""

from __future__ import annotations

import time
from typing import TextIO

# The manual KSM test's steps (flow.py), as "step N/8".
STEPS = 8


class Reporter:
    """Step lines, and the progress line while KSM settles: rewritten in place on a
    terminal, one line every few seconds into a pipe or a log."""

    PIPE_EVERY = 5.0

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._open = False
        self._last = 0.0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def step(self, n: int, text: str) -> None:
        self.end_progress()
        self._write(f"step {n}/{STEPS}: {text}\n")

    def info(self, text: str) -> None:
        self.end_progress()
        self._write(f"  {text}\n")

    def progress(self, pages_sharing: int, full_scans: int, elapsed: float) -> None:
        line = f"  pages_sharing {pages_sharing}  full scans {full_scans}  elapsed {elapsed:.1f}s"
        if self.tty:
            self._write(f"\r\x1b[K{line}")
            self._open = True
        elif time.monotonic() - self._last >= self.PIPE_EVERY:
            self._write(line + "\n")
            self._last = time.monotonic()

    def end_progress(self) -> None:
        if self._open:
            self._write("\n")
            self._open = False
