"""Names of the daemon's threads, as the kernel shows them."""

from __future__ import annotations

import contextlib
import ctypes


def set_native_thread_name(name: str) -> None:
    """Name the calling thread in the kernel too (/proc/PID/task/TID/comm), so that
    tools outside Python (ps -L, top -H, a test that stops this one thread) can find it.
    Best effort: without prctl the Python name still holds."""
    pr_set_name = 15
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_name, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
