"""The daemon: watcher thread, transition log, HTTP server."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ksm_exporter import __version__
from ksm_exporter.collectors.registry import (
    COLLECTORS,
    RUN_LAST,
    Sources,
    build_collectors,
    process_name_cache,
    scrape_context,
)
from ksm_exporter.collectors.source import HIDDEN
from ksm_exporter.daemon.health import Heartbeat, Liveness
from ksm_exporter.daemon.logging_setup import configure, set_level
from ksm_exporter.daemon.malloc import give_back_freed_memory, limit_arenas
from ksm_exporter.daemon.own_metrics import own_metrics
from ksm_exporter.daemon.scrape import Scraper
from ksm_exporter.daemon.systemd import ServiceNotifier, journal_handler, status_line
from ksm_exporter.daemon.watcher import Watcher
from ksm_exporter.daemon.web.admission import Admission, Limits
from ksm_exporter.daemon.web.app import ExporterApp, Watched
from ksm_exporter.daemon.web.server import ExporterHTTPServer, ListenAddressError
from ksm_exporter.daemon.web.webconfig import (
    WebConfig,
    WebConfigError,
    load_web_config,
    reload_web_config,
)
from ksm_exporter.flags.parser import FlagError, flag_names, given_flags
from ksm_exporter.flags.serve import collector_dest
from ksm_exporter.flags.serve import parser as serve_parser
from ksm_exporter.model.derived import page_size
from ksm_exporter.readers import Paths, describe_error, read_regular_file
from ksm_exporter.readers.edge_inputs import edge_explainer
from ksm_exporter.readers.processes import read_process_names
from ksm_exporter.readers.shell_assignments import parse_assignments
from ksm_exporter.state.history import History
from ksm_exporter.state.history_file import HistoryFile, history_path
from ksm_exporter.state.monitor import KsmMonitor
from ksm_exporter.state.notices import Notices
from ksm_exporter.state.read_errors import ProcessReadErrors, ReadErrors
from ksm_exporter.state.settle import SettleTracker
from ksm_exporter.state.state_file import StateFile
from ksm_exporter.state.transitions import Transition, TransitionTracker

log = logging.getLogger("ksm_exporter")


def log_transition(t: Transition) -> None:
    """One line per edge, its message checkKSM_start_time.sh's line."""
    log.info(t.watch_message(), extra={"fields": t.log_fields()})


@dataclass
class Daemon:
    """Everything the running exporter holds, for the serve loop and for tests."""

    monitor: KsmMonitor
    watcher: Watcher
    scraper: Scraper
    server: ExporterHTTPServer
    liveness: Liveness
    # Signal handlers only set flags and wake the main loop; the work runs outside them.
    wake: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    reload_pending: bool = False
    # Called in order on SIGHUP (now: the web config); a failing one is logged and
    # keeps the previous configuration, the others still run.
    reloaders: list[Callable[[], None]] = field(default_factory=list)

    def request_stop(self) -> None:
        self.stopping = True
        self.wake.set()

    def request_reload(self) -> None:
        self.reload_pending = True
        self.wake.set()

    def reload(self) -> None:
        log.info("reloading (SIGHUP)")
        for reloader in self.reloaders:
            try:
                reloader()
            except Exception as e:
                log.error("reload failed, previous configuration kept: %s", e)

    def wait_for_stop(self) -> None:
        """The main loop: sleep until a signal; reload on SIGHUP, return on SIGTERM/SIGINT."""
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.stopping:
                return
            if self.reload_pending:
                self.reload_pending = False
                self.reload()


def enabled_collectors(args: argparse.Namespace) -> list[str]:
    """The collectors --collector.NAME / --no-collector.NAME leave on, in registry order."""
    return [c.name for c in COLLECTORS if getattr(args, collector_dest(c.name))]


def warn_if_processes_hidden(procfs: Path, enabled: list[str]) -> None:
    """One warning at start when /proc hides other users' processes: the collectors that
    need them then leave their series out (and say so in ksm_scrape_collector_success)."""
    affected = [name for name in ("process", "ksmd", "ksmtuned") if name in enabled]
    if affected and read_process_names(procfs).others_hidden:
        log.warning(
            "%s: ksmtuned, ksmd and per-VM figures are left out",
            HIDDEN,
            extra={"fields": {"procfs": str(procfs), "collectors": ",".join(affected)}},
        )


def web_config_reloader(server: ExporterHTTPServer, path: Path) -> Callable[[], None]:
    """SIGHUP: re-read --web.config.file. A broken file, or one that would downgrade the
    listener, raises, so the previous configuration stays (Daemon.reload logs why). New
    settings apply to new connections (TLS) and to the next request (basic auth, headers)."""

    def reload() -> None:
        try:
            web = reload_web_config(server.web, path)
        except WebConfigError as e:
            raise RuntimeError(f"web config not reloaded: {e}") from e
        server.web = web
        log.info("web config reloaded", extra={"fields": web.describe()})

    return reload


def args_file_reloader(path: Path, args: argparse.Namespace) -> Callable[[], None]:
    """SIGHUP with --reload.args-file: read ARGS= from the service's settings file again.
    systemd put ARGS on our command line at start and cannot change it in a running
    process, so `systemctl reload` after editing the file would otherwise do nothing.
    --log.level takes effect now; any other flag that changed is named in the log and
    takes effect at the next restart. A file or ARGS that does not parse changes nothing."""

    def reload_args() -> None:
        try:
            text = read_regular_file(path, 64 * 1024).decode("utf-8")  # a FIFO: refused
            assigned, problems = parse_assignments(text)
        except (OSError, UnicodeDecodeError) as e:
            raise RuntimeError(f"{path}: {describe_error(e)}") from e
        if problems:
            raise RuntimeError(f"{path}: {'; '.join(problems)}")
        # systemd splits an unquoted $ARGS at white space.
        argv = assigned.get("ARGS", "").split()
        parser = serve_parser()
        try:
            given = given_flags(parser, argv)
        except FlagError as e:
            raise RuntimeError(f"ARGS in {path}: {e}") from e
        except SystemExit:  # --help or --version in ARGS: printed, but must not stop us
            raise RuntimeError(f"ARGS in {path}: --help and --version are not settings") from None
        level = str(given.pop("log_level", args.log_level))
        if level != args.log_level:
            set_level(level)
            args.log_level = level
            log.info("log level changed", extra={"fields": {"log_level": level}})
        names = flag_names(parser)
        later = sorted(names[dest] for dest, value in given.items() if value != getattr(args, dest))
        if later:
            log.warning(
                "flags changed in the settings file take effect at the next restart",
                extra={"fields": {"file": str(path), "flags": " ".join(later)}},
            )

    return reload_args


def build(args: argparse.Namespace) -> Daemon:
    paths = Paths(args.sysfs, args.procfs)
    notices = Notices()
    read_errors = ReadErrors(notices)
    state_file = StateFile(args.state_file) if args.state_file else None
    restored = state_file.load() if state_file else []
    tracker = TransitionTracker(args.max_history, restored)
    settle = SettleTracker(args.settle_full_scans)
    explain = edge_explainer(paths.procfs, args.ksmtuned_config)
    monitor = KsmMonitor(paths, tracker, read_errors, state_file, explain)
    monitor.add_listener(log_transition)
    monitor.add_snapshot_observer(settle.observe_snapshot)
    history = History(restored)  # the landing page's chart, fed by the watcher
    monitor.add_snapshot_observer(history.observe)
    monitor.add_listener(history.note_edge)
    if state_file is not None:  # its points, kept beside the state file
        history_file = HistoryFile(history_path(state_file.path), history, state_file)
        history_file.load()
        monitor.add_snapshot_observer(history_file.observe)
    watcher = Watcher(monitor, args.watch_interval, notices)
    enabled = enabled_collectors(args)
    # Made first and handed down at construction: the server beats and counts into them,
    # liveness and the exporter collector read them.
    heartbeat = Heartbeat()
    limits = Limits(max_connections=args.max_connections)
    admission = Admission(limits)
    sources = Sources(
        paths=paths,
        page_size=page_size(),
        read_errors=read_errors,
        process_errors=ProcessReadErrors(notices),
        tracker=tracker,
        settle=settle,
        state_file=state_file,
        process_pattern=args.process_pattern,
        process_max=args.process_max,
        ksmtuned_config=args.ksmtuned_config,
        own_metrics=() if args.disable_exporter_metrics else own_metrics(admission),
    )
    names = process_name_cache(args.process_pattern if "process" in enabled else None)
    collectors = build_collectors(enabled, sources)
    scraper = Scraper(collectors, scrape_context(sources, names), notices, RUN_LAST)
    liveness = Liveness(watcher.health, heartbeat)
    watched = Watched(
        snapshot=lambda: watcher.last,
        transitions=tracker.state,
        health=liveness,
        vms=lambda: scraper.latest_vms,
        history=history,
    )
    app = ExporterApp(scraper, watched, args.telemetry_path)
    web = load_web_config(args.web_config_file) if args.web_config_file else WebConfig()
    server = ExporterHTTPServer(args.listen_address, app, web, limits, heartbeat, admission)
    daemon = Daemon(monitor, watcher, scraper, server, liveness)
    if args.reload_args_file:
        daemon.reloaders.append(args_file_reloader(args.reload_args_file, args))
    if args.web_config_file:
        daemon.reloaders.append(web_config_reloader(server, args.web_config_file))
    return daemon


def notifier(daemon: Daemon) -> ServiceNotifier:
    """sd_notify, fed from what the watcher keeps and the liveness of both loops."""
    watcher, monitor = daemon.watcher, daemon.monitor

    def status() -> str:
        transitions = sum(monitor.tracker_state().counts.values())
        return status_line(daemon.liveness(), watcher.last, monitor.paths.ksm_dir, transitions)

    return ServiceNotifier(daemon.liveness, status, watcher.interval)


# The signals the main loop acts on.
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def run(args: argparse.Namespace) -> int:
    limit_arenas()  # before any thread starts
    journal = journal_handler(args.log_journal)
    configure(args.log_level, args.log_format, journal)
    if args.log_journal and journal is None:
        log.warning("--log.journal: journald is not running here; logging to stderr")
    # Held from before the socket listens until the handlers are set and the threads run
    # (they inherit the mask): a signal before its handler would kill us, and one the
    # kernel hands to another thread would not wake the main loop, for CPython runs
    # handlers in the main thread only when that thread next runs Python code.
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
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
        signal.signal(sig, lambda *_: daemon.request_stop())
    signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload())
    daemon.watcher.start()
    daemon.server.serve_in_thread()
    ksm_dir = daemon.monitor.paths.ksm_dir
    # Logged before READY=1: whoever waits for the service finds the port (:0) in the log.
    log.info(
        "listening",
        extra={
            "fields": {
                "address": daemon.server.bound_address,  # the port bound, also for :0
                "version": __version__,
                "ksm_dir": str(ksm_dir),
                **daemon.server.web.describe(),
            }
        },
    )
    sd = notifier(daemon)
    sd.ready()  # the socket has listened since build()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
    give_back_freed_memory()  # what loading the modules used and freed
    if not ksm_dir.is_dir():
        log.warning(
            "KSM is not available; serving ksm_up 0 until it appears",
            extra={"fields": {"ksm_dir": str(ksm_dir)}},
        )
    warn_if_processes_hidden(args.procfs, enabled_collectors(args))
    daemon.wait_for_stop()
    sd.stopping()
    log.info("shutting down")
    daemon.server.shutdown()
    daemon.server.server_close()
    daemon.watcher.stop()
    daemon.scraper.shutdown()
    return 0
