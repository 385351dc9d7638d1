"""What the experiment adds to the settle rule while it waits: an idle ksmd.

When KSM has settled is decided by the daemon's rule, ksm_exporter.state.settle (pages_sharing
moved by less than 1% over the last K full scans). That rule needs full scans to complete;
this module covers the one case where they stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Progress(NamedTuple):
    pages_scanned: int
    full_scans: int


@dataclass
class IdleKsmd:
    """ksmd scans only while some memory is marked mergeable: with none, full_scans stops
    and the settle rule would wait forever. pages_scanned (recent kernels) moves with every
    batch ksmd scans, so when it has not moved for `idle_after` seconds, ksmd has nothing
    to scan and there is nothing to merge. The daemon has no such check: it only reports
    ksm_settled, and waits for nothing."""

    idle_after: float
    _last: Progress | None = None
    _since: float = 0.0

    def observe(self, now: float, pages_scanned: int | None, full_scans: int) -> bool:
        if pages_scanned is None:
            return False  # older kernel: no way to tell, the caller's timeout decides
        progress = Progress(pages_scanned, full_scans)
        if progress != self._last:
            self._last, self._since = progress, now
            return False
        return now - self._since >= self.idle_after


def idle_after(sleep_millisecs: int) -> float:
    """ksmd sleeps sleep_millisecs between batches: a few of those, and at least 2 s."""
    return max(2.0, 3 * sleep_millisecs / 1000 + 1.0)
