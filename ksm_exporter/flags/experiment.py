"""`ksm-exporter experiment`: the KSM test report's flow (docs/experiment.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ksm_exporter.flags.parser import OneLineParser, add_path_flags
from ksm_exporter.model.defaults import SETTLE_FULL_SCANS
from ksm_exporter.model.flag_types import fraction, non_negative_int, parse_duration, positive_int


def workload_shape(text: str) -> tuple[int, int]:
    """`4x256M` -> (4, 268435456); --duplicate is applied after parsing."""
    from ksm_exporter.experiment.workload import parse_workload

    try:
        spec = parse_workload(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return spec.processes, spec.bytes_each


def parser() -> OneLineParser:
    p = OneLineParser(
        prog="ksm-exporter experiment",
        description="Run the KSM test report's flow (stop KSM, unmerge, drop caches, measure, "
        "start KSM, wait until pages_sharing is stable, run the workload, measure) and print "
        "the two result matrices. Root only; every KSM setting is restored afterwards.",
    )
    load = p.add_mutually_exclusive_group(required=True)
    load.add_argument(
        "--workload",
        type=workload_shape,
        metavar="NxSIZE",
        help="start N processes with SIZE (K, M, G) of mergeable memory each, e.g. 4x256M",
    )
    load.add_argument(
        "--no-workload",
        dest="no_workload",
        action="store_true",
        help="start nothing: measure what already runs on the node (its VMs)",
    )
    p.add_argument(
        "--duplicate",
        type=fraction,
        default=0.75,
        metavar="F",
        help="fraction of each workload process identical across the processes (default 0.75)",
    )
    p.add_argument(
        "--pages-to-scan",
        dest="pages_to_scan",
        type=positive_int,
        metavar="N",
        help="pages_to_scan during the run (default: leave the node's value)",
    )
    p.add_argument(
        "--sleep-millisecs",
        dest="sleep_millisecs",
        type=non_negative_int,
        metavar="MS",
        help="sleep_millisecs during the run (default: leave the node's value)",
    )
    p.add_argument(
        "--timeout",
        type=parse_duration,
        default=600.0,
        metavar="DURATION",
        help="give up waiting for pages_sharing to settle after this long (default 10m)",
    )
    p.add_argument(
        "--settle-scans",
        dest="settle_scans",
        type=positive_int,
        default=SETTLE_FULL_SCANS,
        metavar="K",
        help="settled: pages_sharing changed by less than 1%% over the last K full scans "
        f"(default {SETTLE_FULL_SCANS}, as the daemon's --collector.settle.full-scans)",
    )
    p.add_argument(
        "--interval",
        type=parse_duration,
        default=0.5,
        metavar="DURATION",
        help="how often KSM is read while it settles (default 500ms)",
    )
    p.add_argument(
        "--no-drop-caches",
        dest="drop_caches",
        action="store_false",
        help="skip step 3 (echo 3 > /proc/sys/vm/drop_caches)",
    )
    p.add_argument(
        "--stop-ksmtuned",
        dest="stop_ksmtuned",
        action="store_true",
        help="stop the ksmtuned and ksm services (systemd) for the run, start them after",
    )
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print the matrices as JSON")
    p.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="write a PNG of saved MB and pages_sharing over time (needs ksm-exporter[plot])",
    )
    add_path_flags(p)
    return p
