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


def read_bytes(path: str | os.PathLike[str], limit: int) -> bytes:
    """Up to `limit` bytes of a file in one read: sysfs and procfs generate these files
    whole. os.open/os.read rather than open(): no buffered file object to build and tear
    down for each of the many small files a scrape reads (half the cost of the read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def describe_error(e: Exception) -> str:
    """Why a read failed, in a few words: the OS's message, or the parser's."""
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    return str(e)


def read_small_file(path: str | os.PathLike[str]) -> str:
    """Read a sysfs/procfs file of at most MAX_FILE_BYTES as text.

    Raises OSError (missing, unreadable, a directory) or ValueError (too long, not text).
    """
    data = read_bytes(path, MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"longer than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("not ASCII text") from None
