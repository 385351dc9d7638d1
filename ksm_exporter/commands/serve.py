"""The daemon: watcher thread, transition log, HTTP server."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import psutil
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from .. import __version__
from ..exposition.metrics import KsmCollector
from ..exposition.procfs import ProcfsCollector, ProcfsOptions
from ..exposition.settle import SettleCollector
from ..logging_setup import configure
from ..monitor import KsmMonitor
from ..readers import Paths
from ..settle import SettleTracker
from ..state_file import StateFile
from ..transitions import Transition, TransitionTracker
from ..watcher import Watcher
from ..web.app import ExporterApp
from ..web.server import ExporterHTTPServer, ListenAddressError

log = logging.getLogger("ksm_exporter")


def log_transition(t: Transition) -> None:
    """One line per edge, its message the seed's watch line."""
    log.info(
        t.watch_message(),
        extra={
            "fields": {
                "from": t.from_state.value if t.from_state else "unknown",
                "to": t.to_state.value,
                "run": t.run,
                "mem_used_bytes": t.mem_used_bytes,
                "mem_free_bytes": t.mem_free_bytes,
                "mem_available_bytes": t.mem_available_bytes,
            }
        },
    )


@dataclass
class Daemon:
    """Everything the running exporter holds, for the serve loop and for tests."""

    monitor: KsmMonitor
    watcher: Watcher
    server: ExporterHTTPServer
    stop: threading.Event

    def health(self) -> tuple[bool, str]:
        late = self.watcher.seconds_since_poll()
        if self.watcher.healthy():
            return True, "OK"
        return False, f"watcher stalled: last poll {late:.1f}s ago"


def extra_collectors(args: argparse.Namespace, monitor: KsmMonitor) -> list[Collector]:
    """Per-VM KSM, ksmd's cost, ksmtuned's inputs (one walk of /proc), and settle detection
    (fed by every snapshot the monitor takes)."""
    settle = SettleTracker(args.settle_full_scans)
    monitor.add_snapshot_observer(settle.observe_snapshot)
    options = ProcfsOptions(
        process_pattern=args.process_pattern if args.process_collector else None,
        process_max=args.process_max,
        ksmtuned_config=args.ksmtuned_config,
    )
    return [SettleCollector(settle), ProcfsCollector(args.procfs, options, monitor.read_errors)]


def build_registry(
    monitor: KsmMonitor, exporter_metrics: bool, extra: Iterable[Collector] = ()
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(KsmCollector(monitor))
    for collector in extra:
        registry.register(collector)
    if exporter_metrics:
        # The exporter's own process: always the real /proc, whatever --path.procfs says.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def build(args: argparse.Namespace) -> Daemon:
    paths = Paths(args.sysfs, args.procfs)
    psutil.PROCFS_PATH = str(args.procfs)  # every psutil read follows --path.procfs
    state_file = StateFile(args.state_file) if args.state_file else None
    restored = state_file.load() if state_file else []
    tracker = TransitionTracker(args.max_history, restored)
    monitor = KsmMonitor(paths, tracker, state_file)
    monitor.add_listener(log_transition)
    watcher = Watcher(monitor, args.watch_interval)
    registry = build_registry(
        monitor, not args.disable_exporter_metrics, extra_collectors(args, monitor)
    )
    daemon_holder: list[Daemon] = []
    app = ExporterApp(registry, monitor, lambda: daemon_holder[0].health(), args.telemetry_path)
    server = ExporterHTTPServer(args.listen_address, app)
    daemon = Daemon(monitor, watcher, server, threading.Event())
    daemon_holder.append(daemon)
    return daemon


def run(args: argparse.Namespace) -> int:
    configure(args.log_level, args.log_format)
    try:
        daemon = build(args)
    except ListenAddressError as e:
        print(f"ksm-exporter: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(
            f"ksm-exporter: cannot listen on {args.listen_address}: {e.strerror or e}",
            file=sys.stderr,
        )
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop.set())
    daemon.watcher.start()
    daemon.server.serve_in_thread()
    ksm_dir = daemon.monitor.paths.ksm_dir
    log.info(
        "listening",
        extra={
            "fields": {
                "address": args.listen_address,
                "version": __version__,
                "ksm_dir": str(ksm_dir),
            }
        },
    )
    if not ksm_dir.is_dir():
        log.warning(
            "KSM is not available; serving ksm_up 0 until it appears",
            extra={"fields": {"ksm_dir": str(ksm_dir)}},
        )
    daemon.stop.wait()
    log.info("shutting down")
    daemon.server.shutdown()
    daemon.server.server_close()
    daemon.watcher.stop()
    return 0
