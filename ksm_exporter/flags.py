"""Command-line flags in node_exporter's style (--web.listen-address, --path.sysfs ...)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import NoReturn

from ksm_exporter import __version__
from ksm_exporter.collectors.registry import COLLECTORS
from ksm_exporter.model.defaults import KSMTUNED_CONFIG as DEFAULT_KSMTUNED_CONFIG
from ksm_exporter.model.defaults import LOG_LEVELS as LEVELS
from ksm_exporter.model.defaults import SETTLE_FULL_SCANS as DEFAULT_SETTLE_FULL_SCANS
from ksm_exporter.model.defaults import VM_PATTERN

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


def _whole_number(text: str, minimum: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}: {text!r}")
    return n


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"not a regular expression: {text!r}: {e}") from None


class FlagError(ValueError):
    """A wrong flag, from a parser that raises rather than exits (a reload)."""


class OneLineParser(argparse.ArgumentParser):
    """A wrong flag is one line saying what is wrong, not a usage dump."""

    raise_errors = False

    def error(self, message: str) -> NoReturn:
        if self.raise_errors:
            raise FlagError(message)
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def given_flags(parser: OneLineParser, argv: list[str]) -> dict[str, object]:
    """dest -> value of the flags present in `argv` only (no defaults filled in).
    Raises FlagError for a wrong flag instead of exiting."""
    parser.raise_errors = True
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> the flag's name (--log.level), for messages."""
    return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}


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
        "Subcommands: status, watch, transitions, experiment "
        "(see `ksm-exporter SUBCOMMAND --help`).",
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
        "--web.max-connections",
        dest="max_connections",
        type=positive_int,
        default=512,
        metavar="N",
        help="open connections at most; at the cap the oldest idle one is closed (default 512)",
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
    p.add_argument(
        "--reload.args-file",
        dest="reload_args_file",
        type=Path,
        default=None,
        metavar="FILE",
        help="on SIGHUP, read ARGS= from this settings file (/etc/default/ksm-exporter) and "
        "apply --log.level; other changed flags are named and wait for a restart",
    )
    p.add_argument("--log.format", dest="log_format", choices=("logfmt", "json"), default="logfmt")
    add_collector_flags(p)
    p.add_argument(
        "--log.journal",
        dest="log_journal",
        action="store_true",
        help="log to the systemd journal with KSM_* fields (default: when systemd connects "
        "stderr to the journal); stderr where no journald runs",
    )
    return p


def collector_dest(name: str) -> str:
    """The argparse dest of --[no-]collector.NAME."""
    return f"{name}_collector"


def add_collector_flags(p: argparse.ArgumentParser) -> None:
    """--[no-]collector.NAME for every collector of the registry, and the collectors'
    options: per-VM KSM, ksmtuned's inputs, settle detection (docs/per-vm.md)."""
    for c in COLLECTORS:
        p.add_argument(
            f"--collector.{c.name}",
            dest=collector_dest(c.name),
            action=argparse.BooleanOptionalAction,
            default=c.default,
            help=f"{c.help} (default {'on' if c.default else 'off'})",
        )
    p.add_argument(
        "--collector.process.pattern",
        dest="process_pattern",
        type=regex,
        default=VM_PATTERN,
        metavar="REGEX",
        help=f"processes whose name (comm) this matches, as pgrep does; kernel threads never "
        f"count (default: ksmtuned's qemu names and Proxmox VE's kvm, {VM_PATTERN})",
    )
    p.add_argument(
        "--collector.process.max",
        dest="process_max",
        type=positive_int,
        default=200,
        metavar="N",
        help="at most this many processes exported, those with most merging pages (default 200)",
    )
    add_ksmtuned_config(p)
    p.add_argument(
        "--settle.full-scans",
        dest="settle_full_scans",
        type=positive_int,
        default=DEFAULT_SETTLE_FULL_SCANS,
        metavar="K",
        help="ksm_settled: pages_sharing moved by less than 1%% over the last K full scans "
        f"(default {DEFAULT_SETTLE_FULL_SCANS})",
    )


def add_ksmtuned_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--collector.ksmtuned.config",
        dest="ksmtuned_config",
        type=Path,
        default=DEFAULT_KSMTUNED_CONFIG,
        metavar="FILE",
        help=f"ksmtuned's configuration (default {DEFAULT_KSMTUNED_CONFIG})",
    )


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
    p.add_argument(
        "--explain",
        action="store_true",
        help="append to each line who made the change (ksmtuned, other, unknown) and "
        "ksmtuned's free memory, threshold and committed memory at that moment",
    )
    add_ksmtuned_config(p)
    return p


DEFAULT_TRANSITIONS_URL = "http://127.0.0.1:9941"


def transitions_parser() -> OneLineParser:
    p = OneLineParser(
        prog="ksm-exporter transitions",
        description="Print the recorded KSM starts and stops (time, from -> to, used/free "
        "MB, ksmtuned's free memory against its threshold, cause) and, per direction, the "
        "free memory at which they happened (min/median/max).",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--url",
        default=DEFAULT_TRANSITIONS_URL,
        help=f"a running exporter, read at URL/transitions (default {DEFAULT_TRANSITIONS_URL})",
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
    return p


def fraction(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return f


def workload_shape(text: str) -> tuple[int, int]:
    """`4x256M` -> (4, 268435456); --duplicate is applied after parsing."""
    from .experiment.workload import parse_workload

    try:
        spec = parse_workload(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return spec.processes, spec.bytes_each


def experiment_parser() -> OneLineParser:
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
        default=DEFAULT_SETTLE_FULL_SCANS,
        metavar="K",
        help="settled: pages_sharing changed by less than 1%% over the last K full scans "
        f"(default {DEFAULT_SETTLE_FULL_SCANS}, as the daemon's --settle.full-scans)",
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
