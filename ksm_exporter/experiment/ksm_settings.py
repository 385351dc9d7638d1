"""Change KSM's sysfs settings and put every one of them back.

This is the only module that writes to /sys/kernel/mm/ksm. The exporter daemon never
imports it; the `experiment` command and the real-kernel tests do.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ksm_exporter.model.ksm_files import ADVISOR_MODE
from ksm_exporter.readers import Paths
from ksm_exporter.readers.sysfs_ksm import parse_advisor_mode

# Written in this order on restore: tunables first, `run` last, so ksmd restarts with
# the settings it had. advisor_mode comes before pages_to_scan because the kernel
# refuses pages_to_scan while the scan-time advisor is active.
RESTORABLE = (
    "advisor_mode",
    "advisor_max_cpu",
    "advisor_min_pages_to_scan",
    "advisor_max_pages_to_scan",
    "advisor_target_scan_time",
    "pages_to_scan",
    "sleep_millisecs",
    "max_page_sharing",
    "stable_node_chains_prune_millisecs",
    "use_zero_pages",
    "smart_scan",
    "merge_across_nodes",
    "run",
)

# One experiment (or real-kernel test) at a time on a machine: KSM is global state.
LOCK_PATH = Path(os.environ.get("KSM_EXPORTER_LOCK", "/run/lock/ksm-exporter-experiment.lock"))


class KsmUnavailable(RuntimeError):
    """KSM is absent, or its sysfs is not writable by us."""


def check_writable(sysfs: str | os.PathLike[str] = "/sys") -> Path:
    """Return the KSM directory, or raise KsmUnavailable saying why not."""
    d = Paths(sysfs=Path(sysfs)).ksm_dir
    if not (d / "run").is_file():
        raise KsmUnavailable(f"KSM is not available: {d}/run does not exist (CONFIG_KSM off?)")
    if not os.access(d / "run", os.W_OK):
        raise KsmUnavailable(
            f"KSM settings are read-only here: {d}/run is not writable (not root?)"
        )
    return d


def _current_value(path: Path) -> str:
    """What to write back: the text, or advisor_mode's active word. Raises OSError, or
    ValueError when advisor_mode names no single active mode."""
    text = path.read_text().strip()
    if path.name == ADVISOR_MODE:
        return parse_advisor_mode(text).active
    return text


class KsmSettings:
    """Remembers the first value of every setting it writes and restores them all."""

    def __init__(self, sysfs: str | os.PathLike[str] = "/sys") -> None:
        self.dir = check_writable(sysfs)
        self.saved: dict[str, str] = {}

    def read(self, name: str) -> str:
        return _current_value(self.dir / name)

    def write(self, name: str, value: int | str) -> None:
        path = self.dir / name
        if name not in self.saved:
            self.saved[name] = _current_value(path)
        with open(path, "w") as f:  # the experiment's own write: see module docstring
            f.write(f"{value}\n")

    def restore(self) -> list[str]:
        """Put back everything written; return a message per setting that failed."""
        failures: list[str] = []
        order = sorted(self.saved, key=lambda n: RESTORABLE.index(n) if n in RESTORABLE else -1)
        for name in order:
            try:
                if _current_value(self.dir / name) != self.saved[name]:
                    with open(self.dir / name, "w") as f:
                        f.write(f"{self.saved[name]}\n")
            except (OSError, ValueError) as e:
                failures.append(f"{name}: could not restore {self.saved[name]!r}: {e}")
        self.saved.clear()
        return failures


@contextlib.contextmanager
def exclusive_ksm(
    sysfs: str | os.PathLike[str] = "/sys", on_wait: Callable[[], None] | None = None
) -> Iterator[KsmSettings]:
    """Hold the machine-wide KSM lock and restore every touched setting on exit.
    `on_wait` is called first when someone else holds the lock (to say why we wait)."""
    settings = KsmSettings(sysfs)
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_PATH, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield settings
        finally:
            failures = settings.restore()
            if failures:
                raise RuntimeError("; ".join(failures))
