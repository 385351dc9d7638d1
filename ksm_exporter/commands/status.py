"""`ksm-exporter status`: what checkKSM_pages_info.sh prints, in its order and spelling."""

from __future__ import annotations

import argparse
import json
import sys

from ksm_exporter.model.derived import awk_number, mebibytes, page_size, saved_bytes, sharing_ratio
from ksm_exporter.readers import Paths
from ksm_exporter.readers.sysfs_ksm import KsmReading, read_ksm

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
    for file in (*SCRIPT_FILES, *rest):
        if file in reading.raw and file not in reading.errors:
            lines.append(f"{script_label(file)}: {reading.raw[file]}")
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
        print(f"ksm-exporter: skipped {paths.ksm_dir / file}: {why}", file=sys.stderr)
    if args.json:
        print(json.dumps(status_json(reading, page_size()), indent=2, sort_keys=True))
    else:
        print("\n".join(status_lines(reading, page_size())))
    return 0
