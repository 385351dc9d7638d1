"""One moment of KSM and memory, as read through the readers."""

from __future__ import annotations

from dataclasses import dataclass

from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.readers.sysfs_ksm import KsmReading


@dataclass(frozen=True)
class Snapshot:
    taken_at: float  # Unix seconds
    ksm: KsmReading
    memory: MemInfo | None  # None when /proc/meminfo could not be read
    page_size: int

    @property
    def run(self) -> int | None:
        return self.ksm.values.get("run")
