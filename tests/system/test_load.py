"""Load on the real exporter process (loopback only, bounded in count and time):
64 concurrent scrapers, idle connections plus a silent TLS client, 20 clients fetching a
large /transitions, and a soak."""

from __future__ import annotations

import json
import os
import socket
import ssl
import statistics
import threading
import time
from pathlib import Path

import pytest

from ksm_exporter.daemon.web.server import raise_fd_limit
from ksm_exporter.model.derived import RunState
from ksm_exporter.state.state_file import StateFile
from ksm_exporter.state.transitions import Transition
from tests.support import copy_fixture, run_exporter, wait_until
from tests.support.certs import make_certs
from tests.support.http_client import KeepAliveClient, rss_bytes


def scrape_ok(status: int, body: bytes) -> bool:
    return status == 200 and b"\nksm_up 1.0\n" in body


def scrape_n(port: int, n: int, errors: list[str]) -> int:
    """n scrapes on one keep-alive connection; failures go to `errors`; returns how many
    were answered."""
    done = 0
    try:
        c = KeepAliveClient(port, timeout=30)
        for _ in range(n):
            status, body = c.get()
            if not scrape_ok(status, body):
                errors.append(f"status {status}")
            done += 1
        c.close()
    except Exception as e:  # any failure is an error of the run
        errors.append(repr(e))
    return done


def test_64_concurrent_scrapers_10000_scrapes_zero_errors(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    total, clients = 10_000, 64
    errors: list[str] = []
    done = [0] * clients
    with run_exporter(root, tmp=tmp_path) as exp:

        def scraper(i: int) -> None:
            done[i] = scrape_n(exp.port, total // clients + (i < total % clients), errors)

        threads = [threading.Thread(target=scraper, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert exp.proc.poll() is None
    assert errors == []
    assert sum(done) == total


def timed_scrapes(client: KeepAliveClient, n: int) -> tuple[list[float], int]:
    """n scrapes on one connection: their latencies (s) and how many failed."""
    latencies, errors = [], 0
    for _ in range(n):
        start = time.perf_counter()
        try:
            ok = scrape_ok(*client.get())
        except OSError:
            ok = False
        latencies.append(time.perf_counter() - start)
        errors += not ok
    return latencies, errors


def test_idle_connections_and_a_silent_tls_client_do_not_slow_scrapes(tmp_path: Path) -> None:
    raise_fd_limit(2048)
    certs = make_certs(tmp_path / "certs")
    config = tmp_path / "web.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {certs.server.cert}\n  key_file: {certs.server.key}\n"
    )
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    root = copy_fixture("linux-6.18", tmp_path)
    idle: list[KeepAliveClient] = []
    with run_exporter(root, f"--web.config.file={config}", tmp=tmp_path) as exp:
        scraper = KeepAliveClient(exp.port, tls=ctx)
        baseline, errors = timed_scrapes(scraper, 500)
        assert errors == 0
        silent = socket.create_connection(("127.0.0.1", exp.port))  # never sends a ClientHello
        try:
            # 500 keep-alive TLS connections that scraped once and now sit idle.
            for _ in range(500):
                c = KeepAliveClient(exp.port, tls=ctx)
                assert scrape_ok(*c.get())
                idle.append(c)
            latencies, errors = timed_scrapes(scraper, 500)
            assert errors == 0
            # Compared with the same scraper before the idle connections opened, not with
            # a fixed time (the machine is shared): medians, generous.
            before, after = statistics.median(baseline), statistics.median(latencies)
            assert after < 3 * before + 0.005, f"median {before * 1e3:.1f} -> {after * 1e3:.1f} ms"
            # The idle ones were not dropped to make this work: they still answer.
            assert scrape_ok(*idle[0].get()) and scrape_ok(*idle[-1].get())
        finally:
            silent.close()
            for c in idle:
                c.close()


def full_history(path: Path, n: int) -> None:
    """A --state.file of n edges (the last day's), written by the exporter's own writer."""
    start = time.time() - 86400
    StateFile(path).save(
        Transition(
            timestamp=start + i,
            from_state=RunState.RUNNING if i % 2 else RunState.STOPPED,
            to_state=RunState.STOPPED if i % 2 else RunState.RUNNING,
            run=0 if i % 2 else 1,
            mem_total_bytes=256 << 30,
            mem_used_bytes=(200 << 30) + i * 4096,
            mem_free_bytes=(40 << 30) - i * 4096,
            mem_available_bytes=(50 << 30) - i * 4096,
            ksmtuned_threshold_bytes=(51 << 30) // 10,
            ksmtuned_committed_bytes=190 << 30,
            ksmtuned_free_bytes=(48 << 30) - i * 4096,
        )
        for i in range(n)
    )


def fetch_discarding(sock: socket.socket, request: bytes, buf: bytearray) -> int:
    """One request on a keep-alive connection; reads the answer's body into `buf` (over and
    over: a client that keeps nothing, so that the exporter is what is measured); returns
    the body's length."""
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    left = length - len(rest)
    view = memoryview(buf)
    while left > 0:
        n = sock.recv_into(view, min(left, len(buf)))
        if not n:
            raise ConnectionError("closed")
        left -= n
    return length


def test_20_clients_fetching_a_full_transitions_history_do_not_starve_scrapes(
    tmp_path: Path,
) -> None:
    entries, clients, scrapes = 20_000, 20, 100
    state = tmp_path / "state.jsonl"
    full_history(state, entries)
    root = copy_fixture("linux-6.18", tmp_path)
    request = b"GET /transitions HTTP/1.1\r\nHost: test\r\n\r\n"
    stop = threading.Event()
    fetched = [0] * clients
    errors: list[str] = []
    with run_exporter(
        root, f"--state.file={state}", f"--transitions.max-history={entries}", tmp=tmp_path
    ) as exp:
        c = KeepAliveClient(exp.port, timeout=30)
        status, body = c.get(request)
        c.close()
        assert status == 200 and len(json.loads(body)) == entries  # the full history
        size = len(body)

        def fetcher(i: int) -> None:
            buf = bytearray(1 << 20)
            try:
                with socket.create_connection(("127.0.0.1", exp.port), timeout=30) as s:
                    while not stop.is_set():
                        assert fetch_discarding(s, request, buf) == size
                        fetched[i] += 1
            except Exception as e:  # any failure is an error of the run
                errors.append(repr(e))

        threads = [threading.Thread(target=fetcher, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: all(fetched), timeout=60, what="every client fetching")
            latencies, failed = timed_scrapes(KeepAliveClient(exp.port, timeout=30), scrapes)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
    assert errors == [] and failed == 0
    p99 = sorted(latencies)[int(len(latencies) * 0.99) - 1]
    print(f"/transitions {size} bytes, {sum(fetched)} fetched; /metrics p99 {p99 * 1e3:.0f} ms")
    assert p99 < 1.0, f"/metrics p99 {p99:.2f} s beside {clients} /transitions clients"


# 100,000 scrapes take about a minute here (2 cores); KSM_EXPORTER_SOAK=N changes the count.
SOAK_SCRAPES = int(os.environ.get("KSM_EXPORTER_SOAK", "100000"))


@pytest.mark.skipif(SOAK_SCRAPES <= 0, reason="KSM_EXPORTER_SOAK=0")
def test_soak_rss_grows_less_than_2_mb(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    clients = 4
    warmup = 5_000
    errors: list[str] = []
    with run_exporter(root, tmp=tmp_path) as exp:

        def run(total: int) -> None:
            threads = [
                threading.Thread(target=scrape_n, args=(exp.port, total // clients, errors))
                for _ in range(clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)

        run(warmup)  # caches filled, allocator arenas grown: measure growth after this
        before = rss_bytes(exp.proc.pid)
        started = time.monotonic()
        run(SOAK_SCRAPES)
        after = rss_bytes(exp.proc.pid)
        took = time.monotonic() - started
    assert errors == []
    growth = after - before
    print(f"soak: {SOAK_SCRAPES} scrapes in {took:.0f} s, RSS {before} -> {after} (+{growth})")
    assert growth < 2 * 1024 * 1024
