"""`ksm-exporter status`: the KSM counters like checkKSM_pages_info.sh."""

from __future__ import annotations

from ksm_exporter.flags.parser import OneLineParser, add_path_flags


def parser() -> OneLineParser:
    p = OneLineParser(
        prog="ksm-exporter status",
        description="Print the KSM counters like checkKSM_pages_info.sh.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead")
    add_path_flags(p)
    return p
