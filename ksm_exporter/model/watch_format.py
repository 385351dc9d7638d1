"""The line checkKSM_start_time.sh prints at each edge, shared by `watch` and the daemon's log."""

from __future__ import annotations

import time

from ksm_exporter.model.derived import mebibytes


def watch_message(what: str, used_bytes: int | None, free_bytes: int | None) -> str:
    """`KSM is running. 8783 MB used. 23273 MB free.` (MB = bytes // 1048576)."""
    used = "?" if used_bytes is None else mebibytes(used_bytes)
    free = "?" if free_bytes is None else mebibytes(free_bytes)
    return f"KSM is {what}. {used} MB used. {free} MB free."


def local_time(timestamp: float) -> str:
    """checkKSM_start_time.sh's `date +"%Y-%m-%d %T"`: local time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def watch_line(timestamp: float, message: str) -> str:
    """The script's line: the time, a colon, the message."""
    return f"{local_time(timestamp)}: {message}"
