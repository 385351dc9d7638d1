"""The HTTP server on its own (in-process, a stub app): protocol, deadlines, the cap."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ksm_exporter.daemon.web import server as server_module
from ksm_exporter.daemon.web.server import ExporterHTTPServer
from ksm_exporter.daemon.web.webconfig import WebConfig, parse_web_config
from tests.support import loop_turns, requests_read, serving, wait_until
from tests.support.certs import make_certs
from tests.support.stub_app import StubApp


@pytest.fixture
def app() -> StubApp:
    return StubApp()


@pytest.fixture
def server(app: StubApp) -> Iterator[ExporterHTTPServer]:
    with serving(app) as s:
        yield s


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data`, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes the connection within `within` s (after whatever it
    still sends)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_keep_alive_serves_many_requests_on_one_connection(server: ExporterHTTPServer) -> None:
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for i in range(5):
        c.request("GET", f"/metrics?i={i}")
        r = c.getresponse()
        assert r.status == 200
        assert r.read() == f"GET /metrics?i={i}\n".encode()
        assert r.getheader("X-Test") == "1"
        assert r.getheader("Content-Type") == "text/plain"
        assert r.getheader("Server").startswith("ksm-exporter/")
        assert r.getheader("Connection") is None
    assert server.connection_count() == 1
    c.close()


def test_headers_reach_the_app_lowercased(server: ExporterHTTPServer, app: StubApp) -> None:
    raw(server.port, b"GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\nX-A: 1\r\nx-a: 2\r\n"
        b"Connection: close\r\n\r\n")  # fmt: skip
    assert app.calls[-1][2]["accept-encoding"] == "gzip"
    assert app.calls[-1][2]["x-a"] == "1, 2"


def test_http10_and_connection_close_end_the_connection(server: ExporterHTTPServer) -> None:
    out = raw(server.port, b"GET /a HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in out
    assert out.endswith(b"GET /a\n")
    out = raw(server.port, b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.endswith(b"GET /b\n")


def test_bare_newlines_are_accepted(server: ExporterHTTPServer) -> None:
    assert raw(server.port, b"GET /nl HTTP/1.0\n\n").endswith(b"GET /nl\n")


def test_pipelined_requests_are_answered_in_order(server: ExporterHTTPServer) -> None:
    out = raw(
        server.port,
        b"GET /1 HTTP/1.1\r\n\r\nHEAD /2 HTTP/1.1\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b"GET /1\n") < out.index(b"GET /3\n")
    assert b"HEAD /2" not in out  # HEAD: headers only, with the length of the body
    assert b"Content-Length: 8\r\n" in out


def test_head_has_no_body(server: ExporterHTTPServer) -> None:
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    c.request("HEAD", "/x")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == "8" and r.read() == b""
    c.request("GET", "/y")  # the connection is still in step
    assert c.getresponse().read() == b"GET /y\n"


def test_a_bad_request_gets_its_status_and_a_close_without_a_warning(
    server: ExporterHTTPServer, app: StubApp, caplog: pytest.LogCaptureFixture
) -> None:
    # The malformed requests themselves: tests/support/malformed.py, at the parser.
    caplog.set_level(logging.DEBUG)
    out = raw(server.port, b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in out
    assert raw(server.port, b"GET / HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    assert app.calls == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


def test_endless_headers_are_cut_off(server: ExporterHTTPServer) -> None:
    with connect(server.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        try:
            for _ in range(40):
                s.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server mid-way: also right
        assert closed_by_server(s, 5)
    assert server.connection_count() == 0


def test_a_request_with_a_body_is_answered_then_closed(server: ExporterHTTPServer) -> None:
    out = raw(server.port, b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in out


def test_a_failing_route_is_a_500_and_the_server_goes_on(server: ExporterHTTPServer) -> None:
    out = raw(server.port, b"GET /boom HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500 ")
    assert raw(server.port, b"GET /ok HTTP/1.0\r\n\r\n").endswith(b"GET /ok\n")


def test_idle_keep_alive_connections_are_closed(app: StubApp) -> None:
    with serving(app, idle_timeout=0.5) as server:
        with connect(server.port) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            assert closed_by_server(s, 5)
        with connect(server.port) as s:
            assert closed_by_server(s, 5)  # never sent a byte


def test_slow_headers_are_cut_off(app: StubApp) -> None:
    with serving(app, header_timeout=0.5, idle_timeout=30) as server, connect(server.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
        assert closed_by_server(s, 5)


def test_a_client_that_does_not_read_is_dropped_and_others_are_served(app: StubApp) -> None:
    with serving(app, write_timeout=0.5) as server, connect(server.port) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(b"GET /big HTTP/1.1\r\n\r\n")
        # While the 4 MB answer is stuck, another client gets its answer.
        assert raw(server.port, b"GET /quick HTTP/1.0\r\n\r\n").endswith(b"GET /quick\n")
        wait_until(lambda: server.connection_count() == 0, timeout=5, what="the drop")


def test_at_the_cap_the_oldest_idle_connection_makes_room(app: StubApp) -> None:
    with serving(app, max_connections=3) as server:
        idle = [connect(server.port) for _ in range(3)]
        wait_until(lambda: server.connection_count() == 3, what="3 connections")
        idle[1].sendall(b"GET / HTTP/1.1\r\n\r\n")  # now idle[0] is the oldest idle one
        assert idle[1].recv(65536).startswith(b"HTTP/1.1 200")
        assert raw(server.port, b"GET /new HTTP/1.0\r\n\r\n").endswith(b"GET /new\n")
        assert closed_by_server(idle[0], 5)
        assert server.connection_counters().evicted == {"idle": 1}
        idle[1].sendall(b"GET / HTTP/1.1\r\n\r\n")  # the recently used one is still open
        assert idle[1].recv(65536).startswith(b"HTTP/1.1 200")
        for s in idle:
            s.close()


def test_at_the_cap_with_none_idle_a_new_connection_is_refused(app: StubApp) -> None:
    with serving(app, max_connections=2) as server:
        busy = [connect(server.port) for _ in range(2)]
        for s in busy:
            s.sendall(b"GET / HTTP/1.1\r\nX-Unfinished: ")  # mid-request: not idle
        wait_until(lambda: server.connection_count() == 2, what="2 connections")
        requests_read(server, 2)  # the partial ones: not idle
        try:
            out = raw(server.port, b"GET / HTTP/1.1\r\n\r\n")
        except ConnectionResetError:  # the request raced the close: refused all the same
            out = b""
        assert out == b"" or out.startswith(b"HTTP/1.1 503 ")
        assert server.connection_counters().refused == {"max_connections": 1}
        busy[0].sendall(b"1\r\n\r\n")  # the refused one did not cost the others anything
        assert busy[0].recv(65536).startswith(b"HTTP/1.1 200")
        for s in busy:
            s.close()


def test_listen_address_in_use_is_an_oserror(server: ExporterHTTPServer, app: StubApp) -> None:
    with pytest.raises(OSError):
        ExporterHTTPServer(f"127.0.0.1:{server.port}", app)  # type: ignore[arg-type]


# ---- responses that come later (a future) -----------------------------------------------


def test_a_future_parks_its_connection_while_others_are_served(
    server: ExporterHTTPServer, app: StubApp
) -> None:
    with connect(server.port) as parked:
        parked.sendall(b"GET /later HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n")
        wait_until(lambda: len(app.futures) == 1, what="the app to be asked")
        # The loop is free: another connection is answered while the future is pending.
        assert raw(server.port, b"GET /other HTTP/1.0\r\n\r\n").endswith(b"GET /other\n")
        # The parked connection's pipelined request waits for the first answer.
        assert [c[1] for c in app.calls].count("/after") == 0
        parked.settimeout(0.2)
        with pytest.raises(socket.timeout):
            parked.recv(1)
        app.complete_later(0)
        parked.settimeout(5)
        out = b""
        while out.count(b"HTTP/1.1 200") < 2 or not out.endswith(b"GET /after\n"):
            out += parked.recv(65536)
        assert out.index(b"later\n") < out.index(b"GET /after\n")


def test_a_future_that_fails_is_a_500_logged_once(
    server: ExporterHTTPServer, app: StubApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ksm_exporter.daemon.web.server")
    for i in range(3):
        with connect(server.port) as s:
            s.sendall(b"GET /later-boom HTTP/1.1\r\nConnection: close\r\n\r\n")
            wait_until(lambda i=i: len(app.futures) == i + 1, what="the app to be asked")
            app.complete_later(i)
            s.settimeout(5)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        assert out.startswith(b"HTTP/1.1 500 ")
        assert b"a collector failed" not in out  # the cause is for the log, not the client
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].levelno == logging.ERROR
    assert raw(server.port, b"GET /ok HTTP/1.0\r\n\r\n").endswith(b"GET /ok\n")


def test_a_client_that_hangs_up_while_parked_frees_its_slot(
    server: ExporterHTTPServer, app: StubApp
) -> None:
    s = connect(server.port)
    s.sendall(b"GET /later HTTP/1.1\r\n\r\n")
    wait_until(lambda: len(app.futures) == 1, what="the app to be asked")
    s.close()
    wait_until(lambda: server.connection_count() == 0, timeout=5, what="the slot freed")
    app.complete_later(0)  # completing it afterwards goes nowhere, harmlessly
    assert raw(server.port, b"GET /ok HTTP/1.0\r\n\r\n").endswith(b"GET /ok\n")


def test_a_parked_connection_is_busy_not_idle_at_the_cap(app: StubApp) -> None:
    with serving(app, max_connections=2) as server:
        parked = connect(server.port)
        parked.sendall(b"GET /later HTTP/1.1\r\n\r\n")
        wait_until(lambda: len(app.futures) == 1, what="the app to be asked")
        idle = connect(server.port)
        wait_until(lambda: server.connection_count() == 2, what="2 connections")
        # At the cap, the idle one makes room, not the parked one.
        assert raw(server.port, b"GET /new HTTP/1.0\r\n\r\n").endswith(b"GET /new\n")
        assert closed_by_server(idle, 5)
        app.complete_later(0)
        parked.settimeout(5)
        assert parked.recv(65536).startswith(b"HTTP/1.1 200")
        parked.close()
        idle.close()


# ---- the loop's own health --------------------------------------------------------------


def test_the_loop_turns_while_idle_and_stops_turning_when_blocked(
    server: ExporterHTTPServer, app: StubApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The idle wake at 0.2 s rather than 1 s: the same loop, five times faster to prove.
    monkeypatch.setattr(server_module, "MAX_POLL_SECONDS", 0.2)
    loop_turns(server, 3)  # no traffic at all: the loop still turns (the epoll timeout)
    assert server.seconds_since_turn() < 0.5
    with connect(server.port) as s:
        s.sendall(b"GET /block HTTP/1.1\r\n\r\n")  # blocks the loop thread itself
        wait_until(lambda: server.seconds_since_turn() > 0.6, what="the loop to look stuck")
        app.unblock.set()
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    wait_until(lambda: server.seconds_since_turn() < 0.5, what="the loop to turn again")


def test_the_loop_thread_is_named_natively(server: ExporterHTTPServer) -> None:
    (thread,) = [t for t in threading.enumerate() if t.name == "ksm-http"]
    comm = f"/proc/self/task/{thread.native_id}/comm"
    with open(comm) as f:
        assert f.read().strip() == "ksm-http"


# ---- limits against hostile clients -----------------------------------------------------


def test_the_header_deadline_counts_from_the_first_byte(app: StubApp) -> None:
    with serving(app, header_timeout=1.0) as server, connect(server.port) as s:
        start = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        while not closed and time.monotonic() - start < 10:
            try:
                s.sendall(b"X")  # a byte now and then does not move the deadline
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            closed = closed or closed_by_server(s, 0.2)
        assert closed, "a byte every 0.2 s kept the request open for 10 s"


def test_at_the_cap_a_slow_request_is_evicted_before_an_idle_connection(app: StubApp) -> None:
    with serving(app, max_connections=2, slow_request_grace=0.2) as server:
        idle = connect(server.port)
        idle.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        slow = connect(server.port)
        slow.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
        wait_until(lambda: server.connection_count() == 2, what="2 connections")
        time.sleep(0.3)  # past the grace
        assert raw(server.port, b"GET /new HTTP/1.0\r\n\r\n").endswith(b"GET /new\n")
        assert closed_by_server(slow, 5)
        assert server.connection_counters().evicted == {"slow_request": 1}
        idle.sendall(b"GET / HTTP/1.1\r\n\r\n")  # the idle keep-alive one was kept
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        idle.close()
        slow.close()


def test_a_request_within_the_grace_is_not_evicted(app: StubApp) -> None:
    with (
        serving(app, max_connections=1, slow_request_grace=30) as server,
        connect(server.port) as partial,
    ):
        partial.sendall(b"GET / HTTP/1.1\r\n")
        wait_until(lambda: server.connection_count() == 1, what="1 connection")
        requests_read(server, 1)
        try:
            out = raw(server.port, b"GET / HTTP/1.0\r\n\r\n")
        except ConnectionResetError:
            out = b""
        assert out == b"" or out.startswith(b"HTTP/1.1 503 ")
        assert server.connection_counters().refused == {"max_connections": 1}
        partial.sendall(b"\r\n")
        assert partial.recv(65536).startswith(b"HTTP/1.1 200")


class GatedAuth:
    """Stands in for webconfig.BasicAuth: `check` waits for `gate` (a slow bcrypt that
    the test controls); only alice:right passes."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.checks = 0

    def cached(self, user: str, password: str) -> bool:
        return False

    def check(self, user: str, password: str) -> bool:
        self.checks += 1
        self.gate.wait(10)
        return (user, password) == ("alice", "right")


def auth_header(user: str, password: str) -> bytes:
    import base64

    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()) + b"\r\n"


@contextlib.contextmanager
def running_with_auth(
    app: StubApp, auth: GatedAuth, **limits: float
) -> Iterator[ExporterHTTPServer]:
    try:
        with serving(app, WebConfig(auth=auth), **limits) as server:  # type: ignore[arg-type]
            yield server
    finally:
        auth.gate.set()  # a check still waiting must not hold the shutdown


def test_the_bcrypt_queue_is_bounded(app: StubApp) -> None:
    auth = GatedAuth()
    with running_with_auth(app, auth, auth_queue=2) as server:
        waiting = [connect(server.port) for _ in range(2)]
        for s in waiting:
            s.sendall(b"GET / HTTP/1.1\r\n" + auth_header("alice", "wrong") + b"\r\n")
        wait_until(lambda: server.auth_waiting() == 2, what="2 checks waiting")
        for _ in range(3):  # the queue is full: 503 at once, no bcrypt
            out = raw(server.port, b"GET / HTTP/1.1\r\n" + auth_header("eve", "x") + b"\r\n")
            assert out.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in out
        assert server.connection_counters().refused == {"auth_queue": 3}
        assert server.auth_waiting() == 2
        auth.gate.set()
        for s in waiting:
            assert s.recv(65536).startswith(b"HTTP/1.1 401 ")
            assert closed_by_server(s, 5)
            s.close()
        assert auth.checks <= 2


def test_a_wrong_password_closes_the_connection_so_the_next_guess_needs_a_new_one(
    app: StubApp,
) -> None:
    auth = GatedAuth()
    auth.gate.set()
    with running_with_auth(app, auth) as server:
        guesses = b"".join(
            b"GET / HTTP/1.1\r\n" + auth_header("alice", f"guess{i}") + b"\r\n" for i in range(5)
        )
        out = raw(server.port, guesses)
        assert out.count(b"HTTP/1.1 401 ") == 1 and b"Connection: close" in out
        assert auth.checks == 1
        # Right credentials are served, and a request without any is a 401 that keeps
        # the connection open (no bcrypt was spent on it).
        ok = b"GET /in HTTP/1.1\r\n" + auth_header("alice", "right") + b"Connection: close\r\n\r\n"
        assert raw(server.port, ok).endswith(b"GET /in\n")
        with connect(server.port) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 401 ")
            assert not closed_by_server(s, 0.3)


def test_a_check_waiting_past_its_deadline_is_closed_and_queued_ones_are_evictable(
    app: StubApp,
) -> None:
    auth = GatedAuth()
    with running_with_auth(app, auth, auth_timeout=0.5, max_connections=3) as server:
        running_check = connect(server.port)
        running_check.sendall(b"GET / HTTP/1.1\r\n" + auth_header("alice", "a") + b"\r\n")
        wait_until(lambda: auth.checks == 1, what="the first check to run")
        queued = connect(server.port)
        queued.sendall(b"GET / HTTP/1.1\r\n" + auth_header("alice", "b") + b"\r\n")
        wait_until(lambda: server.auth_waiting() == 2, what="2 checks waiting")
        busy = connect(server.port)
        busy.sendall(b"GET / HTTP/1.1\r\nX-Unfinished: ")  # within its grace: not evictable
        wait_until(lambda: server.connection_count() == 3, what="3 connections")
        requests_read(server, 3)  # two waiting for bcrypt, one partial
        # At the cap: the queued check makes room (its bcrypt never runs), and the new
        # connection is served (a 401 without credentials, not a refusal).
        assert raw(server.port, b"GET /new HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 401 ")
        assert server.connection_counters().evicted == {"auth_queue": 1}
        assert closed_by_server(queued, 5)
        # The running one passes its deadline and is closed without an answer.
        assert closed_by_server(running_check, 5)
        assert server.auth_waiting() == 0
        auth.gate.set()
        assert auth.checks == 1
        for s in (running_check, queued, busy):
            s.close()


def test_a_future_completing_after_server_close_writes_nowhere(app: StubApp) -> None:
    with serving(app) as server, connect(server.port) as s:
        s.sendall(b"GET /later HTTP/1.1\r\n\r\n")
        wait_until(lambda: len(app.futures) == 1, what="the app to be asked")
    # The server's descriptors are closed; new ones likely get their numbers.
    pipes = [os.pipe() for _ in range(16)]
    try:
        app.complete_later(0)
        for r, _ in pipes:
            os.set_blocking(r, False)
            with pytest.raises(BlockingIOError):
                os.read(r, 1)
    finally:
        for fds in pipes:
            for fd in fds:
                os.close(fd)


def test_at_the_cap_a_slow_tls_handshake_is_evicted(app: StubApp, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    web = parse_web_config(
        f"tls_server_config:\n  cert_file: {certs.server.cert}\n  key_file: {certs.server.key}\n",
        tmp_path,
    )
    with (
        serving(app, web, max_connections=1, slow_request_grace=0.2) as server,
        connect(server.port) as slow,
    ):
        slow.sendall(b"\x16\x03\x01\x02\x00")  # the start of a ClientHello, and no more
        wait_until(lambda: server.connection_count() == 1, what="1 connection")
        time.sleep(0.3)  # past the grace
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        c = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=5)
        c.request("GET", "/tls")
        assert c.getresponse().read() == b"GET /tls\n"
        c.close()
        assert closed_by_server(slow, 5)
        assert server.connection_counters().evicted == {"slow_request": 1}
