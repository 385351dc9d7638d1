"""Anonymous memory that KSM may merge (madvise MADV_MERGEABLE)."""

from __future__ import annotations

import mmap
import os

PAGE_SIZE = mmap.PAGESIZE


class MergeableMemory:
    """`pages` anonymous pages, the first `identical` filled with one pattern shared by
    every instance (like guests running the same OS), the rest random."""

    def __init__(self, pages: int, identical: int, pattern: bytes = b"ksm-exporter") -> None:
        if not 0 <= identical <= pages:
            raise ValueError("identical must be between 0 and pages")
        self.pages = pages
        self.map = mmap.mmap(-1, pages * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        page = (pattern * (PAGE_SIZE // len(pattern) + 1))[:PAGE_SIZE]
        for i in range(identical):
            self.map[i * PAGE_SIZE : (i + 1) * PAGE_SIZE] = page
        if pages > identical:
            self.map[identical * PAGE_SIZE :] = os.urandom((pages - identical) * PAGE_SIZE)
        self.map.madvise(mmap.MADV_MERGEABLE)

    def close(self) -> None:
        self.map.close()

    def __enter__(self) -> MergeableMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
