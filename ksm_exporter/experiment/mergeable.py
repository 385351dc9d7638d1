"""Anonymous memory that KSM may merge (madvise MADV_MERGEABLE)."""

from __future__ import annotations

import mmap
import os

PAGE_SIZE = mmap.PAGESIZE
RANDOM_CHUNK = 16 * 1024 * 1024


def fill_page(stamp: bytes) -> bytes:
    """One page of `stamp` repeated."""
    return (stamp * (PAGE_SIZE // len(stamp) + 1))[:PAGE_SIZE]


class MergeableMemory:
    """`pages` anonymous pages, the first `identical` filled with one pattern shared by
    every instance (like guests running the same OS), the rest random.

    With `per_page`, identical page i holds the pattern and i: the pages of one instance
    all differ, and page i equals page i of every other instance with the same pattern.
    KSM then keeps one copy per page index, as it would for N guests booted from the same
    image, instead of folding every identical page of every instance into one page."""

    def __init__(
        self,
        pages: int,
        identical: int,
        pattern: bytes = b"ksm-exporter",
        *,
        per_page: bool = False,
    ) -> None:
        if not 0 <= identical <= pages:
            raise ValueError("identical must be between 0 and pages")
        self.pages = pages
        self.identical = identical
        self.map = mmap.mmap(-1, pages * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        page = fill_page(pattern)
        for i in range(identical):
            if per_page:
                page = fill_page(pattern + i.to_bytes(8, "little"))
            self.map[i * PAGE_SIZE : (i + 1) * PAGE_SIZE] = page
        self.randomize()
        self.map.madvise(mmap.MADV_MERGEABLE)

    def randomize(self) -> None:
        """Write fresh random bytes over the non-identical pages, a chunk at a time: one
        bytes object of the whole part would need as much memory again for a moment."""
        end = self.pages * PAGE_SIZE
        for start in range(self.identical * PAGE_SIZE, end, RANDOM_CHUNK):
            stop = min(start + RANDOM_CHUNK, end)
            self.map[start:stop] = os.urandom(stop - start)

    def close(self) -> None:
        self.map.close()

    def __enter__(self) -> MergeableMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
