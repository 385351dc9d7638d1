"""`ksm-exporter` (serve): the daemon's flags, and --[no-]collector.NAME with each
collector's own options, which the collector declares (collectors/*.py: OPTIONS)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ksm_exporter import __version__
from ksm_exporter.collectors.registry import COLLECTORS
from ksm_exporter.flags.parser import OneLineParser, add_option, add_path_flags, add_watch_interval
from ksm_exporter.model.defaults import LOG_LEVELS
from ksm_exporter.model.flag_types import positive_int

DEFAULT_LISTEN = ":9941"


def parser() -> OneLineParser:
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
    p.add_argument("--log.level", dest="log_level", choices=LOG_LEVELS, default="info")
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
    """--[no-]collector.NAME for every collector of the registry, then every collector's
    options (--collector.NAME.OPTION), in the registry's order."""
    for c in COLLECTORS:
        p.add_argument(
            f"--collector.{c.name}",
            dest=collector_dest(c.name),
            action=argparse.BooleanOptionalAction,
            default=c.default,
            help=f"{c.help} (default {'on' if c.default else 'off'})",
        )
    for c in COLLECTORS:
        for option in c.options:
            add_option(p, option)
