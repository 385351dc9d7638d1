"""When has KSM settled? pages_sharing changed by less than 1% over the last K full scans.

This is the same rule as the settle tracker of the per-VM issue (issue 5), which is being
written in parallel; this copy is kept small and pure so that the two can be unified into
one when both have landed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_SCANS = 3
DEFAULT_TOLERANCE = 0.01


@dataclass
class SettleRule:
    """Feed it (full_scans, pages_sharing) readings in time order; `observe` says whether
    pages_sharing now differs by less than `tolerance` from what it was `scans` full scans
    ago. Full scans, not seconds: a scan of a large node can take minutes, and only a whole
    scan has looked at every page again."""

    scans: int = DEFAULT_SCANS
    tolerance: float = DEFAULT_TOLERANCE
    # pages_sharing as first seen at each full_scans count, ascending.
    _history: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.scans < 1:
            raise ValueError("scans must be at least 1")
        if not 0 < self.tolerance < 1:
            raise ValueError("tolerance must be between 0 and 1")

    def observe(self, full_scans: int, pages_sharing: int) -> bool:
        if self._history and full_scans < self._history[-1][0]:
            self._history.clear()  # the counter went back: not the same ksmd, start over
        if not self._history or full_scans > self._history[-1][0]:
            self._history.append((full_scans, pages_sharing))
        reference = None
        for scans, sharing in self._history:
            if scans > full_scans - self.scans:
                break
            reference = sharing
        if reference is None:
            return False  # fewer than `scans` full scans seen yet
        change = abs(pages_sharing - reference)
        # Zero change settles too: a node with nothing to merge stays at 0.
        return change == 0 or change < self.tolerance * max(pages_sharing, reference)

    @property
    def full_scans_seen(self) -> int:
        """Full scans between the first reading and the last."""
        if not self._history:
            return 0
        return self._history[-1][0] - self._history[0][0]


@dataclass
class IdleKsmd:
    """ksmd scans only while some memory is marked mergeable: with none, full_scans stops
    and the settle rule would wait forever. pages_scanned (recent kernels) moves with every
    batch ksmd scans, so when it has not moved for `idle_after` seconds, ksmd has nothing
    to scan and there is nothing to merge. Not part of the shared settle rule."""

    idle_after: float
    _last: tuple[int, int] | None = None
    _since: float = 0.0

    def observe(self, now: float, pages_scanned: int | None, full_scans: int) -> bool:
        if pages_scanned is None:
            return False  # older kernel: no way to tell, the caller's timeout decides
        progress = (pages_scanned, full_scans)
        if progress != self._last:
            self._last, self._since = progress, now
            return False
        return now - self._since >= self.idle_after


def idle_after(sleep_millisecs: int) -> float:
    """ksmd sleeps sleep_millisecs between batches: a few of those, and at least 2 s."""
    return max(2.0, 3 * sleep_millisecs / 1000 + 1.0)
