"""The exporter process over HTTP: endpoints, content negotiation, health, bad input."""

from __future__ import annotations

import gzip
import json
import shutil
import signal
import socket
import urllib.request
from pathlib import Path

from tests.support import (
    FIXTURES,
    copy_fixture,
    run_exporter,
    wait_until,
    write_ksm,
)

KSM = "sys/kernel/mm/ksm"


def test_landing_page_shows_summary_and_transitions(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    with run_exporter(root, tmp=tmp_path) as exporter:
        # The page shows the watcher's latest poll: wait for the first.
        page = wait_until(lambda: "stopped (run = 0)" in (p := exporter.get("/")[1]) and p)
        assert "KSM Exporter" in page and 'href="/metrics"' in page
        assert "No change of state seen yet." in page
        assert "11 MB" in page
        write_ksm(root, "run", 1)
        key = 'ksm_run_transitions_total{cause="unknown",state="running"}'
        wait_until(lambda: exporter.metrics()[key] == 1, what="the edge recorded")
        status, page = exporter.get("/")
        assert status == 200
        assert "<td class=l>stopped</td><td class=l>running</td><td>25743</td><td>6318</td>" in page


def test_not_found_and_method_not_allowed(tmp_path: Path) -> None:
    with run_exporter(copy_fixture("linux-6.18", tmp_path), tmp=tmp_path) as exporter:
        assert exporter.get("/nope")[0] == 404
        req = urllib.request.Request(exporter.url + "/metrics", data=b"x", method="POST")
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError("POST accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 405


def test_openmetrics_and_gzip_by_request_headers(tmp_path: Path) -> None:
    with run_exporter(copy_fixture("linux-6.18", tmp_path), tmp=tmp_path) as exporter:
        req = urllib.request.Request(
            exporter.url + "/metrics",
            headers={
                "Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8",
                "Accept-Encoding": "gzip",
            },
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            assert r.headers["Content-Encoding"] == "gzip"
            body = gzip.decompress(r.read()).decode()
        assert body.endswith("# EOF\n")
        assert "ksm_full_scans_total 12.0" in body


def test_broken_files_are_skipped_and_counted_while_serving(tmp_path: Path) -> None:
    root = copy_fixture("broken", tmp_path)
    with run_exporter(root, tmp=tmp_path) as exporter:
        for n in (1, 2):
            m = exporter.metrics()
            assert m['ksm_exporter_read_errors_total{file="pages_shared"}'] == n
            assert m["ksm_pages_volatile"] == -3 and m["ksm_up"] == 1
        # Logged by the watcher thread (a scrape never logs), at its next poll.
        wait_until(lambda: "skipping pages_shared: not an integer: 'lots'" in exporter.log())


def test_ksm_directory_vanishing_and_coming_back(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    ksm = root / KSM
    with run_exporter(root, tmp=tmp_path) as exporter:
        assert exporter.metrics()["ksm_up"] == 1
        shutil.move(ksm, root / "away")
        m = exporter.metrics()
        assert m["ksm_up"] == 0 and "ksm_pages_shared" not in m
        # The watcher keeps polling the missing directory, and says so on the landing page.
        wait_until(
            lambda: "the KSM sysfs directory is missing" in exporter.get("/")[1],
            what="the watcher seeing the directory gone",
        )
        assert exporter.get("/-/healthy")[0] == 200
        write_ksm_dir = root / "away"
        (write_ksm_dir / "run").write_text("1\n")
        shutil.move(root / "away", ksm)
        m = wait_until(lambda: (x := exporter.metrics())["ksm_up"] == 1 and x, what="ksm_up 1")
        assert m["ksm_pages_shared"] == 1000
        # The state before the gap was stopped; coming back running is one edge, recorded
        # by the watcher within one interval. No pid 1 in the fixture's /proc (as if
        # hidden): who made the edge is unknown.
        key = 'ksm_run_transitions_total{cause="unknown",state="running"}'
        wait_until(lambda: exporter.metrics()[key] == 1, what="the edge recorded")
        assert exporter.proc.poll() is None
        assert json.loads(exporter.get("/transitions")[1])[0]["from"] == "stopped"


def test_missing_ksm_at_start_serves_ksm_up_zero(tmp_path: Path) -> None:
    root = copy_fixture("no-ksm", tmp_path)
    with run_exporter(root, tmp=tmp_path) as exporter:
        m = exporter.metrics()
        assert m["ksm_up"] == 0
        # Logged by the main thread after it starts serving: a scrape can come first.
        wait_until(lambda: "KSM is not available" in exporter.log(), what="the warning")


def test_sighup_reloads_without_dropping_the_socket(tmp_path: Path) -> None:
    with run_exporter(copy_fixture("linux-6.18", tmp_path), tmp=tmp_path) as exporter:
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloading (SIGHUP)" in exporter.log(), what="reload logged")
        assert exporter.get("/metrics")[0] == 200 and exporter.proc.poll() is None


def test_sigterm_as_soon_as_the_port_listens_exits_0(tmp_path: Path) -> None:
    # run_exporter yields the moment a connection is accepted: the signal lands while the
    # daemon is still starting its threads, the window in which it once went unhandled.
    for attempt in range(3):
        root = copy_fixture("linux-6.18", tmp_path / str(attempt))
        with run_exporter(root, tmp=tmp_path) as exporter:
            exporter.proc.send_signal(signal.SIGTERM)
            # Exits, and with 0: a bound for a loaded machine, not a timing claim.
            assert exporter.proc.wait(10) == 0, exporter.log()


def test_sighup_rereads_args_from_the_settings_file(tmp_path: Path) -> None:
    settings = tmp_path / "ksm-exporter.default"
    settings.write_text('# /etc/default/ksm-exporter\nARGS=""\n')
    root = copy_fixture("linux-6.18", tmp_path)
    with run_exporter(root, f"--reload.args-file={settings}", tmp=tmp_path) as exporter:

        def bad_request() -> None:
            """A request the server answers 400, with a line at debug level."""
            with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as s:
                s.sendall(b"NONSENSE\r\n\r\n")
                assert s.recv(100).startswith(b"HTTP/1.1 400")

        bad_request()
        exporter.get("/metrics")  # a whole request after it: its debug line came before
        assert " level=debug " not in exporter.log()

        settings.write_text('ARGS="--log.level=debug --web.listen-address=:9999"\n')
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "log level changed" in exporter.log(), what="the new level applied")
        log = exporter.log()
        [changed] = [line for line in log.splitlines() if "log level changed" in line]
        assert changed.count(" level=") == 1 and " log_level=debug" in changed  # one key each
        assert 'msg="flags changed in the settings file take effect at the next restart"' in log
        assert "flags=--web.listen-address" in log
        assert " level=debug " not in log  # the reload's own lines are at info
        bad_request()  # now its debug line is written
        wait_until(lambda: " level=debug " in exporter.log(), what="a debug line")

        settings.write_text('ARGS="--log.level=loud"\n')
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in exporter.log(), what="the refusal")
        assert "--log.level: invalid choice: 'loud'" in exporter.log()
        settings.write_text('ARGS="--version"\n')
        exporter.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "are not settings" in exporter.log(), what="--version refused")
        assert exporter.get("/metrics")[0] == 200 and exporter.proc.poll() is None


def test_threads_carry_their_names_for_the_kernel(tmp_path: Path) -> None:
    """A test under systemd stops just the watcher or just the HTTP loop by these names;
    ps -L and top -H show every thread's (none inherits the name of its starter)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify")}
        root = copy_fixture("linux-6.18", tmp_path)
        with run_exporter(root, tmp=tmp_path, env=env) as exporter:
            assert exporter.get("/metrics")[0] == 200  # starts the collector workers
            tasks = Path(f"/proc/{exporter.proc.pid}/task")
            main = str(exporter.proc.pid)
            expected = {"ksm-watcher", "ksm-http", "ksm-deadlines", "ksm-sd-notify"}
            names = wait_until(
                lambda: (
                    (
                        n := {
                            (t / "comm").read_text().strip()
                            for t in tasks.iterdir()
                            if t.name != main
                        }
                    )
                    >= expected
                    and n
                ),
                what="named threads",
            )
    assert names - expected and all(n.startswith("ksm-collect-") for n in names - expected)


def test_hidden_processes_are_absent_and_said_once(tmp_path: Path) -> None:
    """A /proc without pid 1 (hidepid, ProtectProc=invisible): the figures that need every
    process are absent, never 0, their collectors fail, and one warning at start says why."""
    conf = f"--collector.ksmtuned.config={FIXTURES}/ksmtuned/stock.conf"
    with run_exporter(copy_fixture("linux-6.18", tmp_path), conf, tmp=tmp_path) as exporter:
        for _ in range(3):
            m = exporter.metrics()
            for name in ("ksmtuned_running", "ksmtuned_committed_bytes", "ksmtuned_would_run"):
                assert name not in m
            assert "ksm_ksmd_cpu_seconds_total" not in m
            for c in ("ksmtuned", "ksmd", "process"):
                assert m[f'ksm_scrape_collector_success{{collector="{c}"}}'] == 0
            assert m["ksmtuned_threshold_bytes"] > 0  # meminfo and the config: readable
        log = exporter.log()
        assert log.count("/proc hides other users' processes") == 1, log
        assert "ksmtuned, ksmd and per-VM figures are left out" in log
