"""The HTTP server around ExporterApp: one event-loop thread on non-blocking sockets.

Why not prometheus-client's start_http_server: with TLS it runs the handshake in the
accept loop (one client that never sends a ClientHello blocks every other scrape), it
keeps a thread per idle connection forever, and it writes headers and body in separate
sends, which on a keep-alive connection waits on delayed ACKs (~40 ms a scrape).

Why one event loop (epoll) and not a pool of threads:
- Idle connections cost a file descriptor and a small object each, not a thread: 500 idle
  keep-alive connections, or 500 clients that never finish a TLS handshake, are just
  entries in the epoll set, and none of them can hold up another connection.
- Every socket operation is non-blocking. Accepting only accepts; a TLS handshake is
  stepped forward when the client's bytes arrive, so a silent client costs nothing and a
  slow one is cut off by its deadline. Nothing waits on a client.
- A scrape is CPU work under the GIL (read ~25 small files, format ~10 KB): threads would
  not run two at once, they would only add hand-offs between threads to every scrape.
  Running it on the loop thread is the cheapest path, and 64 concurrent scrapers are
  simply served in turn.
- The one slow step, bcrypt (50-250 ms a check, by design), runs on a single helper
  thread (one at a time, as exporter-toolkit does), so wrong passwords cannot stall
  scrapes; successful checks are cached, so an authenticated scrape stays fast.

Limits on what connections can cost: a deadline per connection (TLS handshake, request
headers once they started, idle keep-alive, writing a response to a slow reader), request
headers at most MAX_HEADER_BYTES, and at most `max_connections` connections: at the cap
the oldest idle one is closed to make room, and when none is idle a new one is refused.

Each response (status line, headers and body) goes out in one send(): see above.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import http
import logging
import os
import resource
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING

from ksm_exporter import __version__
from ksm_exporter.daemon.web.app import ExporterApp, Response
from ksm_exporter.daemon.web.webconfig import BasicAuth, WebConfig

if TYPE_CHECKING:
    import concurrent.futures

    # What app.handle returns: an answer now, or one that a worker thread completes later.
    Future = concurrent.futures.Future[Response]
    AppResult = Response | Future

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
RECV_BYTES = 64 * 1024
SERVER = f"ksm-exporter/{__version__}"
DEFAULT_MAX_CONNECTIONS = 512

_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP
# While a connection waits (bcrypt, a future): its bytes stay unread, but a client that
# hangs up is seen (RDHUP), so its slot is freed at once.
_HANGUP = select.EPOLLRDHUP
# The loop wakes at least this often even when nothing happens, so that
# seconds_since_turn() stays small while the loop is healthy (the systemd watchdog).
MAX_POLL_SECONDS = 1.0
THREAD_NAME = "ksm-http"
# Non-blocking "try again later": plain sockets raise the first two, TLS ones the others.
# (ssl costs nothing extra: prometheus_client's exposition has loaded it already.)
_AGAIN = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

# Connection states.
_HANDSHAKE = 0  # TLS handshake in progress
_READ = 1  # waiting for (the rest of) a request
_WRITE = 2  # a response is partly sent; the client reads slowly
_AUTH = 3  # a bcrypt check for this request runs on the helper thread
_APP = 4  # the app answered with a future: waiting for it to complete


@dataclass(frozen=True)
class Limits:
    """Per-connection deadlines (seconds) and the connection cap."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    handshake_timeout: float = 10.0  # accept to TLS handshake done
    header_timeout: float = 10.0  # first byte of a request to its last header
    idle_timeout: float = 30.0  # between requests on a keep-alive connection
    write_timeout: float = 10.0  # for a response the client is slow to take
    # For a future the app returned. The app keeps its own (shorter) deadlines; this
    # only frees the connection if a future never completes.
    app_timeout: float = 300.0


class ListenAddressError(ValueError):
    pass


def parse_listen_address(address: str) -> tuple[str, int]:
    """`host:port`, `:port` (every interface) or `[v6addr]:port`."""
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ListenAddressError(f"--web.listen-address={address!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        n = int(port)
    except ValueError:
        raise ListenAddressError(
            f"--web.listen-address={address!r}: port is not a number"
        ) from None
    if not 0 <= n <= 65535:
        raise ListenAddressError(f"--web.listen-address={address!r}: port out of range")
    return host, n


class _Request:
    __slots__ = ("close", "has_body", "headers", "method", "target")

    def __init__(
        self, method: str, target: str, headers: dict[str, str], close: bool, has_body: bool
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.close = close
        self.has_body = has_body


class _BadRequest(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def _parse_request(head: bytes) -> _Request:
    """Request line and headers (without the blank line). Raises _BadRequest."""
    lines = head.decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if not version.startswith("HTTP/1."):
        raise _BadRequest(505 if version.startswith("HTTP/") else 400, "unsupported version")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t" or line[0] in " \t":
            raise _BadRequest(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    tokens = headers.get("connection", "").lower()
    close = "keep-alive" not in tokens if version == "HTTP/1.0" else "close" in tokens
    length = headers.get("content-length")
    # isdigit() alone takes "²" (latin-1), which int() then refuses.
    if length is not None and not (length.isascii() and length.isdigit()):
        raise _BadRequest(400, "bad Content-Length")
    has_body = "transfer-encoding" in headers or (length is not None and int(length) > 0)
    return _Request(method, target, headers, close, has_body)


class _Conn:
    __slots__ = (
        "buf",
        "close_after",
        "deadline",
        "events",
        "fd",
        "last_active",
        "out",
        "peer",
        "pending",
        "sock",
        "started",
        "state",
        "tls",
    )

    def __init__(self, sock: socket.socket, peer: str, tls: bool, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.tls = tls
        self.state = _HANDSHAKE if tls else _READ
        self.started = False  # bytes of a handshake or request have arrived
        self.buf = b""
        self.out: memoryview | None = None
        self.pending: object = None  # the future (or bcrypt job) this connection waits on
        self.close_after = False
        self.last_active = now
        self.deadline = now
        self.events = _IN

    @property
    def idle(self) -> bool:
        """Nothing in progress: may be closed to make room for a new connection."""
        return self.state in (_HANDSHAKE, _READ) and not self.started


class ExporterHTTPServer:
    def __init__(
        self,
        address: str,
        app: ExporterApp,
        web: WebConfig | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.app = app
        self.web = web or WebConfig()
        self.limits = limits or Limits()
        self.refused = 0  # connections refused at the cap
        self.evicted = 0  # idle connections closed to make room
        host, port = parse_listen_address(address)
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
        # For ":port" prefer the IPv6 wildcard, which also takes IPv4 (dual stack).
        infos.sort(key=lambda i: i[0] != socket.AF_INET6 if not host else 0)
        family, _, _, _, sockaddr = infos[0]
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and not host:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.socket.bind(sockaddr[:2])
            self.socket.listen(min(1024, socket.SOMAXCONN))
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        raise_fd_limit(self.limits.max_connections + 64)
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self.socket.fileno(), _IN)
        self._epoll.register(self._wake_r, _IN)
        self._conns: dict[int, _Conn] = {}
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._started = threading.Event()
        self._next_sweep = float("inf")
        self._date = (0, "")
        # bcrypt checks: one at a time, as exporter-toolkit does (it is CPU-bound by design).
        self._auth_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._auth_done: collections.deque[tuple[_Conn, _Request, bool]] = collections.deque()
        # Futures the app returned that have completed; appended by whatever thread
        # completes them, taken by the loop after a wake.
        self._app_done: collections.deque[tuple[_Conn, Future]] = collections.deque()
        self._errors_logged: set[str] = set()
        self._turned = time.monotonic()

    @property
    def port(self) -> int:
        return self.server_address[1]

    # ---- lifecycle -------------------------------------------------------------------

    def serve_in_thread(self) -> threading.Thread:
        """Run the loop in a thread named THREAD_NAME; returns once the loop runs (and the
        thread has its native name)."""
        t = threading.Thread(target=self.serve_forever, name=THREAD_NAME, daemon=True)
        self._stopped.clear()
        self._started.clear()
        t.start()
        self._started.wait(5)
        return t

    def serve_forever(self) -> None:
        self._stopped.clear()
        if threading.current_thread() is not threading.main_thread():
            set_native_thread_name(THREAD_NAME)
        self._turned = time.monotonic()
        self._started.set()
        try:
            while not self._stop:
                self._run_once()
                self._turned = time.monotonic()
        finally:
            self._stopped.set()

    def seconds_since_turn(self) -> float:
        """Seconds since the loop last completed a turn. It turns at least once every
        MAX_POLL_SECONDS, so a large value means the loop is stuck (or not running)."""
        return time.monotonic() - self._turned

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the loop (from another thread) and wait for it."""
        self._stop = True
        self._wake()
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        self.socket.close()
        self._epoll.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._auth_pool is not None:
            self._auth_pool.shutdown(wait=False, cancel_futures=True)

    def connection_count(self) -> int:
        return len(self._conns)

    # ---- the loop --------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full pipe: the loop is waking anyway
            os.write(self._wake_w, b"x")

    def _run_once(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        timeout = min(MAX_POLL_SECONDS, max(0.0, self._next_sweep - now))
        try:
            events = self._epoll.poll(timeout)
        except InterruptedError:
            return
        listen_fd = self.socket.fileno()
        for fd, ev in events:
            if fd == listen_fd:
                self._accept()
            elif fd == self._wake_r:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
                self._finish_auth()
                self._finish_app()
            else:
                conn = self._conns.get(fd)
                if conn is not None:
                    try:
                        self._on_event(conn, ev)
                    except Exception:  # a bug must cost one connection, not the server
                        log.exception("error serving %s", conn.peer)
                        self._close(conn)

    def _sweep(self, now: float) -> None:
        """Close connections past their deadline; find the next deadline."""
        nearest = float("inf")
        for conn in list(self._conns.values()):
            if conn.deadline <= now and conn.state != _AUTH:
                log.debug("closing %s: timed out (state %d)", conn.peer, conn.state)
                self._close(conn)
            elif conn.deadline < nearest:
                nearest = conn.deadline
        # Deadlines move later with activity, so sweeping more often than 4 times a
        # second would mostly find nothing to do.
        self._next_sweep = max(nearest, now + 0.25) if nearest != float("inf") else nearest

    def _set_deadline(self, conn: _Conn, seconds: float, now: float) -> None:
        conn.deadline = now + seconds
        if conn.deadline < self._next_sweep:
            self._next_sweep = conn.deadline

    def _set_events(self, conn: _Conn, events: int) -> None:
        if conn.events != events:
            conn.events = events
            self._epoll.modify(conn.fd, events)

    # ---- connections -----------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(64):  # then let the loop serve the others
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: log, back off until the next event
                log.warning("accept failed: %s", e.strerror or e)
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    self._make_room()
                return
            if len(self._conns) >= self.limits.max_connections and not self._make_room():
                self._refuse(sock)
                continue
            self._add(sock, addr)

    def _make_room(self) -> bool:
        """Close the oldest idle connection; False when none is idle."""
        idle = (c for c in self._conns.values() if c.idle)
        oldest = min(idle, default=None, key=lambda c: c.last_active)
        if oldest is None:
            return False
        log.debug("closing idle %s to make room", oldest.peer)
        self.evicted += 1
        self._close(oldest)
        return True

    def _refuse(self, sock: socket.socket) -> None:
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning(
                "refusing connections: %d open, none idle (--web.max-connections)",
                len(self._conns),
                extra={"fields": {"refused_total": self.refused}},
            )
        try:
            sock.setblocking(False)
            if self.web.tls is None:
                # Read what the request already sent: closing on unread bytes would
                # reset the connection, and the client might never see the 503.
                with contextlib.suppress(BlockingIOError):
                    sock.recv(RECV_BYTES)
                sock.send(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            sock.close()

    def _add(self, sock: socket.socket, addr: tuple) -> None:
        now = time.monotonic()
        peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ctx = self.web.tls
            if ctx is not None:
                sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError as e:
            log.debug("dropping %s: %s", peer, e)
            sock.close()
            return
        conn = _Conn(sock, peer, ctx is not None, now)
        self._conns[conn.fd] = conn
        self._epoll.register(conn.fd, _IN)
        timeout = self.limits.handshake_timeout if conn.tls else self.limits.idle_timeout
        self._set_deadline(conn, timeout, now)

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.fd, None) is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(conn.fd)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _on_event(self, conn: _Conn, ev: int) -> None:
        state = conn.state
        if state in (_AUTH, _APP):  # only hang-ups are watched while waiting
            if ev & (_ERR | _HANGUP):
                log.debug("%s hung up while its request was being answered", conn.peer)
                self._close(conn)
            return
        conn.last_active = time.monotonic()
        if state == _HANDSHAKE:
            self._handshake(conn)
        elif state == _READ:
            self._read(conn)
        elif state == _WRITE:
            self._flush(conn)
            if conn.state == _READ and conn.buf:  # pipelined requests waited for it
                self._process(conn)

    def _handshake(self, conn: _Conn) -> None:
        sock: ssl.SSLSocket = conn.sock  # type: ignore[assignment]
        conn.started = True
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(conn, _IN)
            return
        except ssl.SSLWantWriteError:
            self._set_events(conn, _OUT)
            return
        except (OSError, ValueError) as e:  # SSLError is an OSError
            log.debug("TLS handshake with %s failed: %s", conn.peer, e)
            self._close(conn)
            return
        conn.state = _READ
        conn.started = False
        self._set_events(conn, _IN)
        self._set_deadline(conn, self.limits.idle_timeout, time.monotonic())
        if sock.pending():
            self._read(conn)

    def _read(self, conn: _Conn) -> None:
        try:
            while True:
                data = conn.sock.recv(RECV_BYTES)
                if not data:
                    self._close(conn)
                    return
                conn.buf += data
                if len(conn.buf) > MAX_HEADER_BYTES + RECV_BYTES:
                    break
                if not conn.tls:
                    if len(data) < RECV_BYTES:
                        break
                elif not conn.sock.pending():  # type: ignore[attr-defined]
                    break
        except _AGAIN:
            pass
        except OSError as e:
            log.debug("reading from %s: %s", conn.peer, e)
            self._close(conn)
            return
        if not conn.started and conn.buf:
            conn.started = True
            self._set_deadline(conn, self.limits.header_timeout, time.monotonic())
        self._process(conn)

    def _process(self, conn: _Conn) -> None:
        """Serve every complete request in the buffer (pipelining), in order."""
        while conn.state == _READ and self._conns.get(conn.fd) is conn:
            buf = conn.buf.lstrip(b"\r\n")  # RFC 9112: ignore blank lines before a request
            end, sep = buf.find(b"\r\n\r\n"), 4
            lf = buf.find(b"\n\n")
            if lf >= 0 and (end < 0 or lf < end):
                end, sep = lf, 2
            if end < 0:
                conn.buf = buf
                if len(buf) > MAX_HEADER_BYTES:
                    self._error(conn, 431, "request headers too large")
                return
            head, conn.buf = buf[:end], buf[end + sep :]
            if end > MAX_HEADER_BYTES:
                self._error(conn, 431, "request headers too large")
                return
            try:
                req = _parse_request(head)
            except _BadRequest as e:
                self._error(conn, e.status, str(e))
                return
            if req.has_body:  # no route takes a body: answer, then close (it is unread)
                req.close = True
            if not self._authorized(conn, req):
                return
            self._answer(conn, req)

    def _answer(self, conn: _Conn, req: _Request) -> None:
        """Ask the app; send its response now, or park the connection on its future."""
        try:
            result: AppResult = self.app.handle(req.method, req.target, req.headers)
        except Exception as e:
            self._log_app_error(e, req)
            result = _internal_error()
        if isinstance(result, Response):
            self._respond(conn, req, result)
            return
        future = result
        if future.done():  # answered already: no need to park
            self._respond(conn, req, self._future_response(future, req))
            return
        # Parked: unread (its next request waits), busy (never evicted as idle), and
        # watched only for a hang-up. The callback may run on any thread: it only queues
        # the connection and wakes the loop, which sends the response.
        conn.state = _APP
        conn.pending = (future, req)
        self._set_events(conn, _HANGUP)
        self._set_deadline(conn, self.limits.app_timeout, time.monotonic())
        future.add_done_callback(lambda f: self._app_completed(conn, f))

    def _app_completed(self, conn: _Conn, future: Future) -> None:
        self._app_done.append((conn, future))
        self._wake()

    def _finish_app(self) -> None:
        while self._app_done:
            conn, future = self._app_done.popleft()
            if self._conns.get(conn.fd) is not conn or conn.state != _APP:
                continue  # closed (hang-up, deadline) while the app worked
            pending_future, req = conn.pending  # type: ignore[misc]
            if pending_future is not future:
                continue
            conn.pending = None
            conn.state = _READ
            self._respond(conn, req, self._future_response(future, req))
            if conn.state == _READ and conn.buf and self._conns.get(conn.fd) is conn:
                self._process(conn)

    def _future_response(self, future: Future, req: _Request) -> Response:
        try:
            return future.result()
        except Exception as e:  # CancelledError included
            self._log_app_error(e, req)
            return _internal_error()

    def _log_app_error(self, e: Exception, req: _Request) -> None:
        """A failing route is a bug: its traceback once per kind of failure, then one
        debug line per request, so that a client repeating it cannot fill the log."""
        kind = f"{type(e).__qualname__}: {e}"[:200]
        if kind in self._errors_logged or len(self._errors_logged) >= 100:
            log.debug("error handling %s %s: %s", req.method, req.target, kind)
            return
        self._errors_logged.add(kind)
        log.error(
            "error handling %s %s (logged once; later ones at debug level)",
            req.method,
            req.target,
            exc_info=e,
        )

    # ---- basic auth ------------------------------------------------------------------

    def _authorized(self, conn: _Conn, req: _Request) -> bool:
        """True to serve now; False when answered (401) or the check went to bcrypt."""
        auth = self.web.auth
        if auth is None:
            return True
        creds = BasicAuth.parse_header(req.headers.get("authorization"))
        if creds is None:
            self._respond(conn, req, _unauthorized())
            return False
        if auth.cached(*creds):
            return True
        if self._auth_pool is None:
            import concurrent.futures  # only with basic auth

            self._auth_pool = concurrent.futures.ThreadPoolExecutor(1, "bcrypt")
        conn.state = _AUTH
        self._set_events(conn, _HANGUP)
        self._auth_pool.submit(self._check, auth, creds, conn, req)
        return False

    def _check(self, auth: BasicAuth, creds: tuple[str, str], conn: _Conn, req: _Request) -> None:
        try:
            ok = auth.check(*creds)
        except Exception:
            log.exception("basic auth check failed")
            ok = False
        self._auth_done.append((conn, req, ok))
        self._wake()

    def _finish_auth(self) -> None:
        while self._auth_done:
            conn, req, ok = self._auth_done.popleft()
            if self._conns.get(conn.fd) is not conn:
                continue  # closed while bcrypt ran
            conn.state = _READ
            self._set_events(conn, _IN)
            if ok:
                self._answer(conn, req)
            else:
                self._respond(conn, req, _unauthorized())
            if conn.state == _READ and conn.buf and self._conns.get(conn.fd) is conn:
                self._process(conn)

    # ---- responses -------------------------------------------------------------------

    def _http_date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]

    def _error(self, conn: _Conn, status: int, why: str) -> None:
        log.debug("%s: %d %s", conn.peer, status, why)
        req = _Request("GET", "", {}, close=True, has_body=False)
        self._respond(conn, req, Response.text(status, why))

    def _respond(self, conn: _Conn, req: _Request, r: Response) -> None:
        lines = [
            f"HTTP/1.1 {r.status} {_REASONS.get(r.status, '')}",
            f"Server: {SERVER}",
            f"Date: {self._http_date()}",
            f"Content-Type: {r.content_type}",
            f"Content-Length: {len(r.body)}",
        ]
        lines += [f"{k}: {v}" for k, v in r.headers]
        lines += [f"{k}: {v}" for k, v in self.web.headers]
        if req.close:
            lines.append("Connection: close")
        lines.append("\r\n")
        head = "\r\n".join(lines).encode("latin-1")
        conn.close_after = req.close
        conn.out = memoryview(head if req.method == "HEAD" else head + r.body)
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        out = conn.out
        assert out is not None
        try:
            n = conn.sock.send(out)
        except _AGAIN:
            n = 0
        except OSError as e:
            log.debug("writing to %s: %s", conn.peer, e)
            self._close(conn)
            return
        now = time.monotonic()
        if n < len(out):
            conn.out = out[n:]
            if conn.state != _WRITE:
                conn.state = _WRITE
                self._set_deadline(conn, self.limits.write_timeout, now)
            self._set_events(conn, _OUT)
            return
        conn.out = None
        if conn.close_after:
            self._close(conn)
            return
        conn.state = _READ
        conn.started = bool(conn.buf)
        timeout = self.limits.header_timeout if conn.started else self.limits.idle_timeout
        self._set_deadline(conn, timeout, now)
        self._set_events(conn, _IN)


def _internal_error() -> Response:
    return Response.text(500, "internal server error; see the exporter's log")


def _unauthorized() -> Response:
    r = Response.text(401, "Unauthorized")
    r.headers.append(("WWW-Authenticate", "Basic"))
    return r


def raise_fd_limit(wanted: int) -> None:
    """Raise the soft fd limit toward `wanted` (as far as the hard one allows), so that
    --web.max-connections connections can open. Failing to is not an error."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def set_native_thread_name(name: str) -> None:
    """Name the calling thread in the kernel too (/proc/PID/task/TID/comm), so that
    tools outside Python (ps -L, top -H, a test that stops this one thread) can find it.
    Best effort: without prctl the Python name still holds."""
    pr_set_name = 15
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_name, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
