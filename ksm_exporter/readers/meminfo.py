"""Read <procfs>/meminfo.

Parsed by hand rather than through psutil.virtual_memory(): psutil returns derived
figures (its `cached` adds SReclaimable, its `used` subtracts buffers and cache), while
checkKSM_start_time.sh's log (procps 3.2 `free -m`: used = MemTotal - MemFree) and ksmtuned
(MemFree + Buffers + Cached) are defined on the raw fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ksm_exporter.readers import U64_MAX, parse_kernel_int

# The file, and its label in ksm_exporter_read_errors_total{file}.
MEMINFO = "meminfo"

_FIELDS = {
    "MemTotal": "total",
    "MemFree": "free",
    "MemAvailable": "available",
    "Buffers": "buffers",
    "Cached": "cached",
}


@dataclass(frozen=True)
class MemInfo:
    """Bytes. `available` is None on kernels before 3.14 (no MemAvailable)."""

    total: int
    free: int
    available: int | None = None
    buffers: int = 0
    cached: int = 0

    @property
    def used(self) -> int:
        """What procps 3.2's `free -m` (in checkKSM_start_time.sh) prints as used:
        MemTotal - MemFree."""
        return self.total - self.free


def parse_meminfo(text: str) -> MemInfo:
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        attr = _FIELDS.get(key)
        if not sep or attr is None:
            continue
        parts = rest.split()
        if not parts:
            raise ValueError(f"{key}: no value")
        n = parse_kernel_int(parts[0], key)
        unit = parts[1] if len(parts) > 1 else ""
        if unit not in ("kB", ""):
            raise ValueError(f"{key}: unknown unit {unit!r}")
        if unit == "kB":
            n *= 1024
            if n > U64_MAX:
                raise ValueError(f"{key}: outside the unsigned 64-bit range in bytes")
        found[attr] = n
    if "total" not in found or "free" not in found:
        raise ValueError("MemTotal or MemFree missing")
    if found["free"] > found["total"]:  # no kernel's: used (MemTotal - MemFree) is >= 0
        raise ValueError("MemFree larger than MemTotal")
    return MemInfo(**found)


def read_meminfo(procfs: Path) -> MemInfo:
    """Raises OSError or ValueError; the caller counts it as a read error."""
    path = procfs / MEMINFO
    with open(path, "rb") as f:
        data = f.read(64 * 1024)
    return parse_meminfo(data.decode("ascii", "replace"))
