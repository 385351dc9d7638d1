"""The daemon: watcher thread, transition log, HTTP server."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

from .. import __version__
from ..exposition.metrics import KsmCollector
from ..exposition.process import GcMetrics, PlatformMetrics, ProcessMetrics
from ..exposition.text import FastRegistry
from ..logging_setup import configure
from ..monitor import KsmMonitor
from ..readers import Paths
from ..state_file import StateFile
from ..transitions import Transition, TransitionTracker
from ..watcher import Watcher
from ..web.app import ExporterApp
from ..web.server import ExporterHTTPServer, Limits, ListenAddressError
from ..web.webconfig import WebConfig, WebConfigError, load_web_config

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
    web_config_file: Path | None = None

    def reload(self) -> bool:
        """What SIGHUP does: re-read --web.config.file. A broken file keeps the previous
        configuration and logs why. New settings apply to new connections (TLS) and to
        the next request (basic auth, headers). True when the new file is in use."""
        if self.web_config_file is None:
            return True
        try:
            web = load_web_config(self.web_config_file)
        except WebConfigError as e:
            log.error(
                "web config not reloaded; keeping the previous one",
                extra={"fields": {"err": str(e)}},
            )
            return False
        self.server.web = web
        log.info("web config reloaded", extra={"fields": web.describe()})
        return True

    def health(self) -> tuple[bool, str]:
        late = self.watcher.seconds_since_poll()
        if self.watcher.healthy():
            return True, "OK"
        return False, f"watcher stalled: last poll {late:.1f}s ago"


def build_registry(monitor: KsmMonitor, exporter_metrics: bool) -> FastRegistry:
    registry = FastRegistry()
    registry.register(KsmCollector(monitor))
    if exporter_metrics:
        # The exporter's own process: always the real /proc, whatever --path.procfs says.
        # prometheus-client's ProcessCollector, PlatformCollector and GCCollector, without
        # importing prometheus-client (see exposition/text.py).
        registry.register(ProcessMetrics())
        registry.register(PlatformMetrics())
        registry.register(GcMetrics())
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
    registry = build_registry(monitor, not args.disable_exporter_metrics)
    daemon_holder: list[Daemon] = []
    app = ExporterApp(registry, monitor, lambda: daemon_holder[0].health(), args.telemetry_path)
    web = load_web_config(args.web_config_file) if args.web_config_file else WebConfig()
    limits = Limits(max_connections=args.max_connections)
    server = ExporterHTTPServer(args.listen_address, app, web, limits)
    daemon = Daemon(monitor, watcher, server, threading.Event(), args.web_config_file)
    daemon_holder.append(daemon)
    return daemon


def run(args: argparse.Namespace) -> int:
    configure(args.log_level, args.log_format)
    try:
        daemon = build(args)
    except ListenAddressError as e:
        print(f"ksm-exporter: {e}", file=sys.stderr)
        return 2
    except WebConfigError as e:
        print(f"ksm-exporter: --web.config.file: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(
            f"ksm-exporter: cannot listen on {args.listen_address}: {e.strerror or e}",
            file=sys.stderr,
        )
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop.set())
    signal.signal(signal.SIGHUP, lambda *_: daemon.reload())
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
                **daemon.server.web.describe(),
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
