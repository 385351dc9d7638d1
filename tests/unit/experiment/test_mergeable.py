"""The memory a workload process marks mergeable: identical across processes, random
where meant to be."""

from __future__ import annotations

import mmap

from ksm_exporter.experiment.mergeable import PAGE_SIZE, MergeableMemory


def test_per_page_memory_equals_across_instances_and_differs_within() -> None:
    a = MergeableMemory(8, 6, pattern=b"salt", per_page=True)
    b = MergeableMemory(8, 6, pattern=b"salt", per_page=True)
    with a, b:

        def page(m: MergeableMemory, i: int) -> bytes:
            return m.map[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]

        identical = [page(a, i) for i in range(6)]
        assert identical == [page(b, i) for i in range(6)]
        assert len(set(identical)) == 6  # one distinct content per page index
        assert page(a, 6) != page(b, 6) and page(a, 7) != page(b, 7)  # the random part
        before = page(a, 7)
        a.randomize()
        assert page(a, 7) != before and page(a, 0) == identical[0]


def test_plain_mergeable_memory_keeps_one_pattern_for_every_identical_page() -> None:
    with MergeableMemory(4, 3) as m:
        pages = {m.map[i * PAGE_SIZE : (i + 1) * PAGE_SIZE] for i in range(3)}
        assert len(pages) == 1
        assert isinstance(m.map, mmap.mmap)
