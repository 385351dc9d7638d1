"""`ksm-exporter status`: what checkKSM_pages_info.sh prints, in its order and spelling,
then the VMs KSM merges pages of, with their platform's identifiers."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout

from ksm_exporter.model.derived import awk_number, mebibytes, page_size, saved_bytes, sharing_ratio
from ksm_exporter.model.qemu import present_identifiers
from ksm_exporter.model.terminal_text import NAME_COLUMN, shown
from ksm_exporter.readers import Paths
from ksm_exporter.readers.processes import read_process_names
from ksm_exporter.readers.sysfs_ksm import KsmReading, read_ksm
from ksm_exporter.readers.vm_processes import (
    VM_PATTERN,
    ProcessReport,
    VmProcess,
    read_vm_processes,
)
from ksm_exporter.state.bounded_reads import in_thread

# As many VMs as the exporter exports by default (--collector.process.max).
MAX_VMS = 100
# How long the VMs' /proc files get: 10,000 processes take well under a second.
VMS_SECONDS = 5.0

# The script's own lines, in its order, after "KSM saved" and "Sharing_Rate".
SCRIPT_FILES = (
    "run",
    "sleep_millisecs",
    "full_scans",
    "pages_sharing",
    "pages_shared",
    "pages_unshared",
    "pages_volatile",
    "pages_to_scan",
)


def script_label(file: str) -> str:
    """pages_to_scan -> Pages_To_Scan, the script's spelling."""
    return "_".join(word.capitalize() for word in file.split("_"))


def status_lines(reading: KsmReading, page_bytes: int) -> list[str]:
    v = reading.values
    if "pages_sharing" in v:
        saved = str(mebibytes(saved_bytes(v["pages_sharing"], page_bytes)))
    else:
        saved = "?"
    if "pages_sharing" in v and "pages_shared" in v:
        rate = awk_number(sharing_ratio(v["pages_sharing"], v["pages_shared"]))
    else:
        rate = "?"
    lines = [f"KSM saved: {saved} MB", f"Sharing_Rate: {rate}", "-" * 33]
    rest = sorted(reading.raw.keys() - set(SCRIPT_FILES))
    for file in (*SCRIPT_FILES, *rest):  # names and values as sysfs gave them: escaped
        if file in reading.raw and file not in reading.errors:
            lines.append(f"{shown(script_label(file))}: {shown(str(reading.raw[file]))}")
    return lines


def status_json(reading: KsmReading, page_bytes: int) -> dict[str, object]:
    v = reading.values
    out: dict[str, object] = {}
    if "pages_sharing" in v:
        out["saved_mb"] = mebibytes(saved_bytes(v["pages_sharing"], page_bytes))
        out["saved_bytes"] = saved_bytes(v["pages_sharing"], page_bytes)
        if "pages_shared" in v:
            out["sharing_rate"] = sharing_ratio(v["pages_sharing"], v["pages_shared"])
    out.update(v)
    if reading.advisor_mode is not None:
        out["advisor_mode"] = reading.advisor_mode.active
    if reading.errors:
        out["errors"] = dict(reading.errors)
    return out


def vm_json(p: VmProcess, page_bytes: int) -> dict[str, object]:
    """One VM: its identifiers (only those its command line gives) and ksm_stat's lines."""
    out: dict[str, object] = {"vm": p.vm, "pid": p.pid}
    for name in ("namespace", "vmid", "uuid"):
        if getattr(p.identity, name):
            out[name] = getattr(p.identity, name)
    out["merged_bytes"] = p.ksm.merging_pages * page_bytes
    out.update(p.ksm.values)
    out.update(p.ksm.flags)
    return out


def vm_lines(processes: Sequence[VmProcess], page_bytes: int) -> list[str]:
    """A text table of the VMs, most merged first; the identifier columns any VM has. One
    row per VM whatever its name holds: control, escape and bidi characters are shown
    escaped, a long name is cut (--json has it exact)."""
    columns = present_identifiers([p.identity for p in processes])
    header = ["VM", *(c.upper() for c in columns), "PID", "MERGING_PAGES", "MERGED_MB"]
    rows = [header]
    for p in sorted(processes, key=lambda p: (-p.ksm.merging_pages, p.vm, p.pid)):
        ids = [shown(getattr(p.identity, c), NAME_COLUMN) or "-" for c in columns]
        merged = mebibytes(p.ksm.merging_pages * page_bytes)
        name = shown(p.vm, NAME_COLUMN)
        rows.append([name, *ids, str(p.pid), str(p.ksm.merging_pages), str(merged)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def read_vms(paths: Paths) -> ProcessReport:
    names = read_process_names(paths.procfs)
    return read_vm_processes(paths.procfs, names, re.compile(VM_PATTERN), MAX_VMS)


def answered_vms(paths: Paths) -> ProcessReport | None:
    """read_vms, or None when it has not answered in VMS_SECONDS: a hung /proc read must
    not keep the KSM figures, read already, from being printed."""
    try:
        return in_thread(lambda: read_vms(paths), "ksm-status-vms").result(VMS_SECONDS)
    except FutureTimeout:
        return None


def run(args: argparse.Namespace) -> int:
    paths = Paths(args.sysfs, args.procfs)
    reading = read_ksm(paths.ksm_dir)
    if not reading.present:
        print(
            f"ksm-exporter: KSM is not available: {paths.ksm_dir} is missing or unreadable",
            file=sys.stderr,
        )
        return 1
    for file, why in sorted(reading.errors.items()):
        print(f"ksm-exporter: skipped {shown(f'{paths.ksm_dir / file}: {why}')}", file=sys.stderr)
    vms = answered_vms(paths)
    if vms is None:
        print(
            f"ksm-exporter: the processes' /proc files did not answer within "
            f"{VMS_SECONDS:g} s (a process whose memory map is locked?); VMs left out",
            file=sys.stderr,
        )
    elif vms.unreadable:
        print(
            f"ksm-exporter: could not read the KSM state of {vms.unreadable} VM processes "
            f"(run as root or with CAP_DAC_READ_SEARCH): {shown(str(vms.first_error))}",
            file=sys.stderr,
        )
    page_bytes = page_size()
    if args.json:
        out = status_json(reading, page_bytes)
        # null: not known (the reads hung); [] would say there are none.
        out["vms"] = None if vms is None else [vm_json(p, page_bytes) for p in vms.processes]
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        lines = status_lines(reading, page_bytes)
        if vms is not None and vms.processes:  # none: the script's output alone
            lines += ["-" * 33, *vm_lines(vms.processes, page_bytes)]
        print("\n".join(lines))
    return 0
