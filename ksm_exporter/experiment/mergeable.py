"""Anonymous memory that KSM may merge (madvise MADV_MERGEABLE)."""

from __future__ import annotations

import mmap
import os

PAGE_SIZE = mmap.PAGESIZE


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
        """Write fresh random bytes over the non-identical pages."""
        if self.pages > self.identical:
            self.map[self.identical * PAGE_SIZE :] = os.urandom(
                (self.pages - self.identical) * PAGE_SIZE
            )

    def close(self) -> None:
        self.map.close()

    def __enter__(self) -> MergeableMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
