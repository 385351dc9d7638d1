"""Command-line flags in node_exporter's style (--web.listen-address, --path.sysfs ...)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__
from .logging_setup import LEVELS

DEFAULT_LISTEN = ":9941"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go-style duration ("250ms", "1s", "1m30s") or plain seconds, to seconds > 0."""
    s = text.strip()
    try:
        seconds = float(s)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(s):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNIT[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise argparse.ArgumentTypeError(
                f"not a duration: {text!r} (try 1s or 500ms)"
            ) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return seconds


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return n


class OneLineParser(argparse.ArgumentParser):
    """A wrong flag is one line saying what is wrong, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def add_path_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--path.sysfs",
        dest="sysfs",
        type=Path,
        default=Path("/sys"),
        metavar="DIR",
        help="sysfs mountpoint (default /sys)",
    )
    p.add_argument(
        "--path.procfs",
        dest="procfs",
        type=Path,
        default=Path("/proc"),
        metavar="DIR",
        help="procfs mountpoint (default /proc)",
    )


def add_watch_interval(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--watch.interval",
        dest="watch_interval",
        type=parse_duration,
        default=1.0,
        metavar="DURATION",
        help="how often `run` and memory are polled for state changes (default 1s)",
    )


def serve_parser() -> OneLineParser:
    p = OneLineParser(
        prog="ksm-exporter",
        description="Prometheus exporter for Linux Kernel Same-page Merging (KSM). "
        "Subcommands: status, watch, experiment (see `ksm-exporter SUBCOMMAND --help`).",
    )
    p.add_argument("--version", action="version", version=f"ksm-exporter {__version__}")
    p.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN})",
    )
    p.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        metavar="PATH",
        help="path under which to expose metrics (default /metrics)",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        default=None,
        metavar="FILE",
        help="exporter-toolkit web configuration (TLS, basic auth)",
    )
    p.add_argument(
        "--web.disable-exporter-metrics",
        dest="disable_exporter_metrics",
        action="store_true",
        help="leave out the exporter's own process_* and python_* metrics",
    )
    add_path_flags(p)
    add_watch_interval(p)
    p.add_argument(
        "--state.file",
        dest="state_file",
        type=Path,
        default=None,
        metavar="PATH",
        help="keep the transition history in this file across restarts",
    )
    p.add_argument(
        "--transitions.max-history",
        dest="max_history",
        type=positive_int,
        default=100,
        metavar="N",
        help="transitions kept and served (default 100)",
    )
    p.add_argument("--log.level", dest="log_level", choices=LEVELS, default="info")
    p.add_argument("--log.format", dest="log_format", choices=("logfmt", "json"), default="logfmt")
    p.add_argument(
        "--log.journal",
        dest="log_journal",
        action="store_true",
        help="log to the systemd journal with KSM_* fields (default: when systemd connects "
        "stderr to the journal)",
    )
    return p


def status_parser() -> OneLineParser:
    p = OneLineParser(
        prog="ksm-exporter status",
        description="Print the KSM counters like checkKSM_pages_info.sh.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead")
    add_path_flags(p)
    return p


def watch_parser() -> OneLineParser:
    p = OneLineParser(
        prog="ksm-exporter watch",
        description="Print a line at each KSM start and stop, like checkKSM_start_time.sh.",
    )
    add_path_flags(p)
    add_watch_interval(p)
    return p
