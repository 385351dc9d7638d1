"""Scrapes in-process: one writer (a scrape changes nothing), collectors under deadlines,
collect[] selection, content negotiation."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily

from ksm_exporter.collectors.source import Collected, ScrapeContext
from ksm_exporter.commands.serve import Daemon
from ksm_exporter.daemon.scrape import (
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    POOL_SIZE,
    Scraper,
    scrape_timeout,
)
from ksm_exporter.daemon.web.app import Response, gzip_wanted
from ksm_exporter.flags.serve import parser as serve_parser
from ksm_exporter.state.notices import Notices
from tests.support import copy_fixture, parse_samples, wait_until, write_ksm
from tests.support.collect import Families
from tests.support.in_process import built_daemon


def test_scrape_timeout_from_prometheus_header() -> None:
    assert scrape_timeout("10") == 9.5  # less the margin for rendering and sending
    assert scrape_timeout("0.3") == 0.1  # never below the minimum
    for huge in ("120.5", "121", "1e300", "inf", "1e999"):  # never past the maximum
        assert scrape_timeout(huge) == MAX_TIMEOUT == 120, huge
    for broken in (None, "", "soon", "-1", "-inf", "0", "nan", "-0.0"):
        assert scrape_timeout(broken) == DEFAULT_TIMEOUT, broken


@pytest.mark.parametrize(
    ("header", "wanted"),
    [
        ("gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("GZIP", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0, identity", False),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=0, *", False),  # the explicit entry decides
        ("identity", False),
        ("", False),
        ("gzip;q=x", False),
    ],
)
def test_gzip_only_where_accepted(header: str, wanted: bool) -> None:
    assert gzip_wanted(header) is wanted


# --- the scraper with collectors that block on demand -----------------------------------


class Blocking:
    """A collector whose read waits for `release` while `hang` is set."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.hang = threading.Event()
        self.release = threading.Event()

    def collect(self, ctx: ScrapeContext) -> Collected:
        self.calls += 1
        if self.hang.is_set():
            self.release.wait(30)
        return Collected((GaugeMetricFamily(f"test_{self.name}", "A test value.", value=1),))


@pytest.fixture
def scraper() -> Iterator[tuple[Scraper, Blocking, Blocking]]:
    slow, fast = Blocking("slow"), Blocking("fast")
    s = Scraper({"slow": slow, "fast": fast}, lambda: None, Notices())  # type: ignore[arg-type, return-value]
    yield s, slow, fast
    slow.release.set()
    s.shutdown()


def samples_of(future: Future) -> dict[str, float]:  # type: ignore[type-arg]
    return parse_samples(generate_latest(Families(future.result(30))).decode())  # type: ignore[arg-type]


def test_a_stuck_collector_fails_by_the_deadline_and_is_not_started_again(
    scraper: tuple[Scraper, Blocking, Blocking],
) -> None:
    s, slow, _ = scraper
    ok = samples_of(s.scrape(["slow", "fast"], 5))
    assert ok["test_slow"] == ok["test_fast"] == 1
    assert ok['ksm_scrape_collector_success{collector="slow"}'] == 1

    slow.hang.set()
    late = samples_of(s.scrape(["slow", "fast"], 0.3))
    assert "test_slow" not in late and late["test_fast"] == 1
    assert late['ksm_scrape_collector_success{collector="slow"}'] == 0
    assert late['ksm_scrape_collector_success{collector="fast"}'] == 1
    assert late['ksm_scrape_collector_duration_seconds{collector="slow"}'] >= 0.3
    assert s.stuck() == ["slow"]

    for _ in range(20):  # many scrapes: the stuck read is never started again
        again = samples_of(s.scrape(["slow", "fast"], 0.3))
        assert again['ksm_scrape_collector_success{collector="slow"}'] == 0
        assert again["test_fast"] == 1
    assert slow.calls == 2
    workers = [t for t in threading.enumerate() if t.name.startswith("ksm-collect")]
    assert len(workers) <= 2

    slow.hang.clear()
    slow.release.set()  # the read returns: the next scrape reads again
    wait_until(lambda: s.stuck() == [], what="the read to return")
    back = samples_of(s.scrape(["slow", "fast"], 5))
    assert back["test_slow"] == 1 and slow.calls == 3


def test_concurrent_scrapes_share_a_read_in_flight(
    scraper: tuple[Scraper, Blocking, Blocking],
) -> None:
    s, slow, _ = scraper
    slow.hang.set()
    first = s.scrape(["slow"], 10)
    second = s.scrape(["slow"], 10)  # within the first one's deadline: joins its read
    slow.release.set()
    assert samples_of(first)["test_slow"] == samples_of(second)["test_slow"] == 1
    assert slow.calls == 1


def test_a_scrape_rescues_reads_it_joined_behind_a_hung_one(
    scraper: tuple[Scraper, Blocking, Blocking],
) -> None:
    """A long-timeout scrape starts [slow, fast] and slow hangs: a normal scrape joining
    fast (queued behind slow) gets it by its own deadline, not the long one's rescue."""
    s, slow, fast = scraper
    slow.hang.set()
    long = s.scrape(["slow", "fast"], scrape_timeout("1e300"))
    wait_until(lambda: slow.calls == 1, what="the slow read to start")
    normal = samples_of(s.scrape(["slow", "fast"], 2))
    assert normal["test_fast"] == 1 and fast.calls == 1  # joined, then rescued
    assert normal['ksm_scrape_collector_success{collector="slow"}'] == 0
    slow.release.set()
    assert samples_of(long)["test_fast"] == 1


def test_finished_scrapes_leave_nothing_waiting_for_their_deadline(
    scraper: tuple[Scraper, Blocking, Blocking],
) -> None:
    s, _, _ = scraper
    for _ in range(300):
        s.scrape(["slow", "fast"], 60).result(30)
    # Each scrape cancelled its two deadline entries (the start of the last collectors and
    # its end) when it finished: a busy exporter keeps no scrape alive for a minute.
    assert s._deadlines.pending() == 0


def test_scrapes_in_parallel_stay_on_the_pool_workers_named_for_the_kernel(
    scraper: tuple[Scraper, Blocking, Blocking],
) -> None:
    s, _, _ = scraper
    served: list[float] = []

    def scrape_many() -> None:  # as a scraper does: the next request after the answer
        for _ in range(100):
            served.append(samples_of(s.scrape(["slow", "fast"], 10))["test_fast"])

    clients = [threading.Thread(target=scrape_many) for _ in range(8)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    assert served == [1] * 800
    # No read hung: 800 scrapes from 8 clients at once ran on the pool's own workers.
    workers = {
        t.native_id: t.name for t in threading.enumerate() if t.name.startswith("ksm-collect")
    }
    assert 1 <= len(workers) <= POOL_SIZE
    for tid, name in workers.items():  # as ps -L and top -H show them
        assert Path(f"/proc/self/task/{tid}/comm").read_text().strip() == name


def test_collector_flags_come_from_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    args = serve_parser().parse_args(["--no-collector.vmstat", "--no-collector.process"])
    assert (args.vmstat_collector, args.process_collector, args.ksm_collector) == (
        False,
        False,
        True,
    )
    assert serve_parser().parse_args(["--collector.exporter"]).exporter_collector is True
    with pytest.raises(SystemExit):
        serve_parser().parse_args(["--collector.nope"])
    assert capsys.readouterr().err.count("\n") == 1


def test_only_the_selected_collectors_run(scraper: tuple[Scraper, Blocking, Blocking]) -> None:
    s, slow, fast = scraper
    only = samples_of(s.scrape(["fast"], 5))
    assert "test_slow" not in only and 'ksm_scrape_collector_success{collector="slow"}' not in only
    assert slow.calls == 0 and fast.calls == 1


# --- the daemon as serve builds it, its threads not started -----------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    root = copy_fixture("procfs-vms", tmp_path)
    with built_daemon(root, f"--state.file={tmp_path}/state", "--no-collector.vmstat") as d:
        yield d, root


def get(d: Daemon, path: str, headers: dict[str, str] | None = None) -> Response:
    result = d.server.app.handle("GET", path, headers or {})
    return result.result(30) if isinstance(result, Future) else result


def test_a_scrape_only_reads(
    daemon: tuple[Daemon, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d, root = daemon
    d.watcher.poll_once()  # the watcher's first look: stopped
    write_ksm(root, "run", 1)
    (root / "sys/kernel/mm/ksm/pages_shared").write_text("lots\n")
    with caplog.at_level(logging.DEBUG):
        for path in ("/metrics", "/", "/transitions", "/-/healthy"):
            assert get(d, path).status == 200, path
        samples = parse_samples(get(d, "/metrics").body.decode())
    assert samples["ksm_run"] == 1  # the scrape saw the new state ...
    edges = sum(v for k, v in samples.items() if k.startswith("ksm_run_transitions_total"))
    assert edges == 0  # ... and recorded nothing
    assert d.monitor.tracker_state().history == ()
    assert not (tmp_path / "state").exists()  # no save, no fsync
    assert caplog.records == []  # no log line: the read error is noted for the watcher
    assert samples['ksm_exporter_read_errors_total{file="pages_shared"}'] == 2

    with caplog.at_level(logging.INFO):
        d.watcher.poll_once()  # the one writer sees the edge, saves, logs
    assert samples_total(get(d, "/metrics"), "running") == 1
    assert (tmp_path / "state").read_text().count('"to": "running"') == 1
    messages = [r.getMessage() for r in caplog.records]
    assert "skipping pages_shared: not an integer: 'lots'" in messages
    assert "KSM is running. 27965 MB used. 4096 MB free." in messages


def samples_total(r: Response, state: str) -> float:
    """Edges into `state`, whatever their cause."""
    prefix, needle = "ksm_run_transitions_total{", f'state="{state}"'
    samples = parse_samples(r.body.decode())
    return sum(v for k, v in samples.items() if k.startswith(prefix) and needle in k)


def test_collect_selects_collectors_like_node_exporter(daemon: tuple[Daemon, Path]) -> None:
    d, _ = daemon
    r = get(d, "/metrics?collect[]=memory&collect[]=ksmd")
    samples = parse_samples(r.body.decode())
    assert {k for k in samples if k.startswith("ksm_scrape_collector_success")} == {
        'ksm_scrape_collector_success{collector="memory"}',
        'ksm_scrape_collector_success{collector="ksmd"}',
    }
    assert "ksm_memory_free_bytes" in samples and "ksm_ksmd_cpu_seconds_total" in samples
    assert "ksm_pages_sharing" not in samples
    bad = get(d, "/metrics?collect[]=memory&collect[]=nope")
    assert bad.status == 400 and bad.body.decode().startswith("unknown collector 'nope'")
    assert bad.body.count(b"\n") == 1
    off = get(d, "/metrics?collect[]=vmstat")
    assert (off.status, off.body) == (
        400,
        b"collector 'vmstat' is disabled (--no-collector.vmstat)\n",
    )


def test_landing_and_health_never_wait_on_a_read(daemon: tuple[Daemon, Path]) -> None:
    d, root = daemon
    page = get(d, "/").body.decode()
    assert "waiting for the watcher&#x27;s first poll" in page
    d.watcher.poll_once()
    (root / "sys/kernel/mm/ksm").rename(root / "away")  # any read now would see nothing
    page = get(d, "/").body.decode()
    assert "stopped (run = 0)" in page  # the watcher's latest poll, not a fresh read


def test_gzip_q0_is_not_gzip(daemon: tuple[Daemon, Path]) -> None:
    d, _ = daemon
    assert get(d, "/metrics", {"accept-encoding": "gzip;q=0"}).headers == []
    assert ("Content-Encoding", "gzip") in get(d, "/metrics", {"accept-encoding": "gzip"}).headers
