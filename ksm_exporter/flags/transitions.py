"""`ksm-exporter transitions`: the recorded KSM starts and stops, from a running exporter
or its state file."""

from __future__ import annotations

from pathlib import Path

from ksm_exporter.flags.parser import OneLineParser

DEFAULT_URL = "http://127.0.0.1:9941"


def parser() -> OneLineParser:
    p = OneLineParser(
        prog="ksm-exporter transitions",
        description="Print the recorded KSM starts and stops (time, from -> to, used/free "
        "MB, ksmtuned's free memory against its threshold, cause) and, per direction, the "
        "free memory at which they happened (min/median/max).",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"a running exporter, read at URL/transitions (default {DEFAULT_URL})",
    )
    source.add_argument(
        "--state.file",
        dest="state_file",
        type=Path,
        default=None,
        metavar="PATH",
        help="read the exporter's --state.file instead",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead")
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="FILE.svg|FILE.png",
        help="draw the landing page's picture instead: free memory against ksmtuned's "
        "threshold, KSM's running time, each start and stop by cause, the savings (the last "
        "day from --url; the recorded edges from --state.file). PNG needs the plot extra "
        "(matplotlib); SVG does not",
    )
    return p
