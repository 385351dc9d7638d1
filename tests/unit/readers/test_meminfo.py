from __future__ import annotations

import pytest

from ksm_exporter.readers.meminfo import parse_meminfo, read_meminfo
from tests.support import FIXTURES


def test_fields_in_bytes_and_used_as_free_m_prints_it() -> None:
    m = read_meminfo(FIXTURES / "linux-6.18" / "proc")
    assert m.total == 32831212 * 1024
    assert m.free == 6470012 * 1024
    assert m.available == 12345678 * 1024
    assert m.buffers == 204800 * 1024 and m.cached == 3145728 * 1024
    assert m.used == m.total - m.free  # procps 3.2 `free -m` Mem: used


def test_old_kernel_without_memavailable() -> None:
    assert read_meminfo(FIXTURES / "linux-2.6.32" / "proc").available is None


def test_the_report_log_line_numbers() -> None:
    # The KSM test report's first log line: 8783 MB used, 23273 MB free on a 32056 MB machine.
    m = parse_meminfo(f"MemTotal: {32056 * 1024} kB\nMemFree: {23273 * 1024} kB\n")
    assert (m.used // 2**20, m.free // 2**20) == (8783, 23273)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "MemTotal: 1 kB\n",
        "MemTotal: x kB\nMemFree: 1 kB\n",
        "MemTotal: 1 MB\nMemFree: 1 kB",
        "MemTotal: 1 kB\nMemFree: 2 kB\n",  # no kernel's: used would be negative
    ],
)
def test_broken_meminfo_raises(text: str) -> None:
    with pytest.raises(ValueError):
        parse_meminfo(text)
