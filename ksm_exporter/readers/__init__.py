"""Readers: functions from a filesystem root (the real one or a fixture tree) to
immutable values. They keep no state and never write.

A reader of one file raises OSError or ValueError, and its caller counts and skips that
file; a reader of many (the KSM directory, the process table, the VMs) returns what failed
beside what it read, so one broken file never costs the rest of a scrape.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

# The kernel's ranges, re-exported for the readers (model/numbers.py: the one rule).
from ksm_exporter.model.numbers import S64_MAX as S64_MAX
from ksm_exporter.model.numbers import S64_MIN as S64_MIN
from ksm_exporter.model.numbers import U64_MAX as U64_MAX


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


# The kernel prints its counters with %lu/%llu (at most 64 bits unsigned) or %ld (64 bits
# signed). A number outside those ranges is corruption, not data: rejected at parse time,
# so no value can reach prometheus-client's float() (which raises OverflowError past 1e308
# and would fail the whole scrape) or lose its meaning by rounding to infinity.


def parse_kernel_int(text: str | bytes, what: str = "", signed: bool = False) -> int:
    """One number as the kernel prints it: ASCII digits after an optional minus, within
    the 64-bit range (signed or not). ValueError says why, after `what: ` when given.
    int() alone would also take "+5", "1_000" and other scripts' digits."""
    s = (text.decode("ascii", "replace") if isinstance(text, bytes) else text).strip()
    if len(s) < 19 and s.isascii() and s.isdigit():  # the common case: within both ranges
        return int(s, 10)
    prefix = f"{what}: " if what else ""
    if not s:
        raise ValueError(f"{prefix}empty")
    digits = s[1:] if s[0] == "-" else s
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"{prefix}not an integer: {s[:40]!r}")
    low, high = (S64_MIN, S64_MAX) if signed else (0, U64_MAX)
    # Length first: no int() of a 400-digit (or 4,000-digit) string refused anyway.
    if len(digits) > 20 or not low <= int(s, 10) <= high:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"{prefix}outside the {kind} 64-bit range: {s[:40]}")
    return int(s, 10)


def open_regular_file(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """A file descriptor of `path` and its stat, only if it is a regular file. O_NONBLOCK
    and fstat before any read: a FIFO, a device or a directory in its place is refused
    rather than read (a FIFO without a writer would block the caller for good, /dev/zero
    would never end). A symlink to a regular file is fine. Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))  # IsADirectoryError
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_regular_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """A configuration file of at most `limit` bytes, whole (open_regular_file says what
    is refused). Raises OSError, also when the file is too large."""
    fd, _ = open_regular_file(path)
    try:
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, limit + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    finally:
        os.close(fd)
    return b"".join(chunks)


def describe_error(e: BaseException) -> str:
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
