"""Read KSM's event counters from <procfs>/vmstat.

cow_ksm and ksm_swpin_copy appeared in Linux 5.19 and exist only with CONFIG_KSM (and
ksm_swpin_copy only with CONFIG_SWAP): an absent line is normal, not an error.
"""

from __future__ import annotations

from pathlib import Path

from ksm_exporter.readers import parse_kernel_int

KSM_EVENTS = ("cow_ksm", "ksm_swpin_copy")


def parse_vmstat(text: str, wanted: tuple[str, ...] = KSM_EVENTS) -> dict[str, int]:
    """The `wanted` counters present in vmstat's `name value` lines."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            found[name] = parse_kernel_int(value, name)
    return found


def read_vmstat(procfs: Path, wanted: tuple[str, ...] = KSM_EVENTS) -> dict[str, int]:
    """Raises OSError or ValueError; the caller counts it as a read error."""
    with open(procfs / "vmstat", "rb") as f:
        data = f.read(64 * 1024)
    return parse_vmstat(data.decode("ascii", "replace"), wanted)
