"""Readers: pure functions from a filesystem root (real or a fixture tree) to values.

They never keep state and never write; errors are returned, not raised, so one broken
file never costs the rest of a scrape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """Where /sys and /proc are (moved with --path.sysfs / --path.procfs)."""

    sysfs: Path = Path("/sys")
    procfs: Path = Path("/proc")

    @property
    def ksm_dir(self) -> Path:
        return self.sysfs / "kernel" / "mm" / "ksm"


# sysfs and procfs files are at most a page; anything longer is not what we expect.
MAX_FILE_BYTES = 4096


def read_small_file(path: str | os.PathLike[str]) -> str:
    """Read a sysfs/procfs file of at most MAX_FILE_BYTES as text.

    Raises OSError (missing, unreadable, a directory) or ValueError (too long, not text).
    """
    # os.open/os.read rather than open(): no buffered file object to build and tear down
    # for each of the ~25 files a scrape reads (a third of a scrape's CPU time).
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"longer than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("not ASCII text") from None
