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
- The app answers either at once (a Response) or later (a Future its worker threads
  complete): then the connection is parked, the loop goes on serving the others, and the
  future's completion wakes the loop (a byte on a pipe) to send the answer.
- The one slow step of the server itself, bcrypt (50-250 ms a check, by design), runs on
  a single helper thread (one at a time, as exporter-toolkit does), so wrong passwords
  cannot stall scrapes; successful checks are cached, so an authenticated scrape stays
  fast.

Why not asyncio streams and h11 (considered, as issue 12 suggested): what makes this
module long is policy, not plumbing — one request per connection per turn, which
connection to evict at the cap, the bounded bcrypt queue, deadlines per state. asyncio
has none of these: they would be written again over tasks and transports (eviction needs
a table of connections and their states either way), a task per connection costs more
than an entry in the epoll set, and h11 would replace only the ~60 lines of
_parse_request, while adding a runtime dependency. The attack tests (tests/system/test_attacks.py)
pass with this design; a rewrite would not make them pass better or the module clearly
smaller.

Fairness and limits on what a connection can cost:
- One request per connection per turn of the loop: a connection that pipelines 100
  requests gets one answered, then waits (its bytes unread) while every other connection
  with a request gets its turn. One client delays the others by about one request's work.
- Deadlines per connection: TLS handshake, request headers counted from the first byte of
  the request (not reset by each byte), idle keep-alive, writing a response to a slow
  reader, waiting for a bcrypt check, waiting for the app.
- Request headers at most MAX_HEADER_BYTES; a strict parser: exactly HTTP/1.0 or
  HTTP/1.1, no control bytes, a Content-Length of at most 18 digits. Bad input is a 4xx
  and a debug line, never a traceback.
- At most `max_connections` connections. At the cap, to make room for a new one the server
  closes, in this order: the oldest partial request older than a short grace (a slow
  header sender), the oldest connection still queued for a bcrypt check, the oldest idle
  keep-alive connection. Only when none of those exists is the new connection refused.
- At most `auth_queue` connections waiting for bcrypt; more get a 503 at once. A wrong
  password closes the connection after its 401, so a client cannot queue check after
  check on one connection: each new guess costs it a new connection, which the cap and
  the queue bound.

Each response (status line, headers and body) goes out in one send(): see above.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import http
import logging
import os
import re
import resource
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from ksm_exporter import __version__
from ksm_exporter.daemon.threads import set_native_thread_name
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
# While a connection waits (its turn, bcrypt, a future): its bytes stay unread, but a
# client that hangs up is seen (RDHUP), so its slot is freed at once.
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
_READ = 1  # waiting for (the rest of) a request, or for its turn to be served
_WRITE = 2  # a response is partly sent; the client reads slowly
_AUTH = 3  # waiting for a bcrypt check (queued or running on the helper thread)
_APP = 4  # the app answered with a future: waiting for it to complete

# Why a connection was closed to make room for a new one (the evicted counter's label).
EVICT_SLOW_REQUEST = "slow_request"
EVICT_AUTH_QUEUE = "auth_queue"
EVICT_IDLE = "idle"
# Why a connection or a request was turned away (the refused counter's label).
REFUSE_MAX_CONNECTIONS = "max_connections"
REFUSE_AUTH_QUEUE = "auth_queue"


@dataclass(frozen=True)
class Limits:
    """Per-connection deadlines (seconds), the connection cap and the bcrypt queue."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    handshake_timeout: float = 10.0  # accept to TLS handshake done
    header_timeout: float = 10.0  # first byte of a request to its last header
    idle_timeout: float = 30.0  # between requests on a keep-alive connection
    write_timeout: float = 10.0  # for a response the client is slow to take
    # A partial request this old may be closed to make room at the cap. A real client
    # sends its headers in one packet; only a slow sender is still sending after this.
    slow_request_grace: float = 1.0
    auth_queue: int = 16  # connections waiting for a bcrypt check, at most
    auth_timeout: float = 5.0  # queued for bcrypt to checked
    # For a future the app returned. The app keeps its own (shorter) deadlines; this
    # only frees the connection if a future never completes.
    app_timeout: float = 300.0


@dataclass(frozen=True)
class ConnectionCounters:
    """Totals since start, by reason (REFUSE_* and EVICT_*)."""

    refused: Mapping[str, int]
    evicted: Mapping[str, int]


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


# RFC 9110 tokens (methods, header names); control bytes other than tab anywhere.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
# A longer Content-Length is no body this server would read; int() of thousands of
# digits would also raise (Python's limit on int-from-str digits).
MAX_CONTENT_LENGTH_DIGITS = 18


def _parse_request(head: bytes) -> _Request:
    """Request line and headers (without the blank line). Raises _BadRequest."""
    lines = [line.removesuffix("\r") for line in head.decode("latin-1").split("\n")]
    if any(_CONTROL.search(line) for line in lines):
        raise _BadRequest(400, "control character in the request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if _VERSION.fullmatch(version):
            raise _BadRequest(505, "unsupported HTTP version")
        raise _BadRequest(400, "malformed HTTP version")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise _BadRequest(400, "malformed header line")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    tokens = headers.get("connection", "").lower()
    close = "keep-alive" not in tokens if version == "HTTP/1.0" else "close" in tokens
    length = headers.get("content-length")
    if length is not None:
        # isdigit() alone takes "²" (latin-1), which int() then refuses.
        if not (length.isascii() and length.isdigit()):
            raise _BadRequest(400, "bad Content-Length")
        if len(length) > MAX_CONTENT_LENGTH_DIGITS:
            raise _BadRequest(400, "Content-Length too long")
    has_body = "transfer-encoding" in headers or (length is not None and int(length) > 0)
    return _Request(method, target, headers, close, has_body)


def _head_end(buf: bytes) -> tuple[int, int]:
    """Where the request head in `buf` ends and the length of its blank line; (-1, 0)
    while incomplete. Bare LF line ends are taken too."""
    end, sep = buf.find(b"\r\n\r\n"), 4
    lf = buf.find(b"\n\n")
    if lf >= 0 and (end < 0 or lf < end):
        end, sep = lf, 2
    return end, sep


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
        "ready",
        "request_started",
        "served_turn",
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
        self.request_started = now  # when they did
        self.buf = b""
        self.out: memoryview | None = None
        # _AUTH, _APP: (the future waited on, the request it answers)
        self.pending: tuple[Any, _Request] | None = None
        self.ready = False  # a complete request waits for the next turn
        self.served_turn = -1  # the loop turn of its last request
        self.close_after = False
        self.last_active = now
        self.deadline = now
        self.events = _IN

    @property
    def idle(self) -> bool:
        """Nothing in progress: may be closed to make room for a new connection."""
        return self.state in (_HANDSHAKE, _READ) and not self.started

    def slow_since(self, now: float, grace: float) -> float | None:
        """When its partial request (or TLS handshake) started, if that is more than
        `grace` ago; None otherwise."""
        partial = self.state in (_HANDSHAKE, _READ) and self.started and not self.ready
        if partial and now - self.request_started >= grace:
            return self.request_started
        return None

    def queued_for_auth(self) -> bool:
        """Waiting for a bcrypt check that has not started (it can be cancelled)."""
        return self.state == _AUTH and self.pending is not None and not self.pending[0].running()


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
        self._refused: collections.Counter[str] = collections.Counter()
        self._evicted: collections.Counter[str] = collections.Counter()
        host, port = parse_listen_address(address)
        # An ASCII host as bytes: a str goes through the idna codec, which loads Unicode
        # tables (~0.3 MB) that only an internationalised name needs.
        node = host.encode() if host.isascii() else host
        infos = socket.getaddrinfo(
            node or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
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
        # Futures complete on other threads, maybe after server_close(): the lock keeps
        # them from writing to a closed (and perhaps reused) descriptor.
        self._wake_lock = threading.Lock()
        self._epoll.register(self.socket.fileno(), _IN)
        self._epoll.register(self._wake_r, _IN)
        self._conns: dict[int, _Conn] = {}
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._started = threading.Event()
        self._next_sweep = float("inf")
        self._date = (0, "")
        self._turn = 0
        self._turned = time.monotonic()
        # Connections with a complete request that had theirs this turn: served next turn.
        self._ready: list[_Conn] = []
        # bcrypt checks: one at a time, as exporter-toolkit does (it is CPU-bound by design).
        self._auth_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._auth_waiting: set[_Conn] = set()
        # Futures (bcrypt checks, app answers) that completed: appended by whatever thread
        # completed them, taken by the loop after a wake.
        self._done: collections.deque[tuple[_Conn, concurrent.futures.Future[Any]]]
        self._done = collections.deque()
        self._errors_logged: set[str] = set()

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def bound_address(self) -> str:
        """host:port actually bound (port 0 in --web.listen-address picks a free one)."""
        host, port = self.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def connection_counters(self) -> ConnectionCounters:
        """Connections refused and evicted since start (for the exporter's own metrics)."""
        return ConnectionCounters(dict(self._refused), dict(self._evicted))

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
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_w = -1
        if self._auth_pool is not None:
            self._auth_pool.shutdown(wait=False, cancel_futures=True)

    def connection_count(self) -> int:
        return len(self._conns)

    def auth_waiting(self) -> int:
        """Connections waiting for a bcrypt check (at most limits.auth_queue)."""
        return len(self._auth_waiting)

    # ---- the loop --------------------------------------------------------------------

    def _wake(self) -> None:
        with self._wake_lock, contextlib.suppress(OSError):  # full: it is waking anyway
            if self._wake_w >= 0:
                os.write(self._wake_w, b"x")

    def _run_once(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        ready, self._ready = self._ready, []
        timeout = 0.0 if ready else min(MAX_POLL_SECONDS, max(0.0, self._next_sweep - now))
        try:
            events = self._epoll.poll(timeout)
        except InterruptedError:
            events = []
        self._turn += 1
        listen_fd = self.socket.fileno()
        for fd, ev in events:
            if fd == listen_fd:
                self._accept()
            elif fd == self._wake_r:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
                self._finish_waits()
            else:
                conn = self._conns.get(fd)
                if conn is not None:
                    self._guarded(conn, self._on_event, conn, ev)
        # Connections that had a request last turn and have another: its turn now.
        for conn in ready:
            conn.ready = False
            if self._conns.get(conn.fd) is conn:
                self._guarded(conn, self._process, conn)

    def _guarded(self, conn: _Conn, step: Any, *args: Any) -> None:
        try:
            step(*args)
        except Exception as e:  # a bug must cost one connection, not the server
            self._log_once(e, f"error serving {conn.peer}")
            self._close(conn)

    def _sweep(self, now: float) -> None:
        """Close connections past their deadline; find the next deadline."""
        nearest = float("inf")
        for conn in list(self._conns.values()):
            if conn.deadline <= now:
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
        """Close one connection to make room for a new one, in this order: the oldest
        slow partial request, the oldest connection queued for bcrypt, the oldest idle
        one. False when there is none of these (then the new one is refused)."""
        now = time.monotonic()
        grace = self.limits.slow_request_grace
        conns = self._conns.values()
        slow = [(t, c) for c in conns if (t := c.slow_since(now, grace)) is not None]
        if slow:
            return self._evict(min(slow, key=lambda tc: tc[0])[1], EVICT_SLOW_REQUEST)
        queued = [c for c in self._auth_waiting if c.queued_for_auth()]
        if queued:
            return self._evict(min(queued, key=lambda c: c.request_started), EVICT_AUTH_QUEUE)
        idle = [c for c in conns if c.idle]
        if idle:
            return self._evict(min(idle, key=lambda c: c.last_active), EVICT_IDLE)
        return False

    def _evict(self, conn: _Conn, reason: str) -> bool:
        log.debug("closing %s to make room (%s)", conn.peer, reason)
        self._evicted[reason] += 1
        self._close(conn)
        return True

    def _refuse(self, sock: socket.socket) -> None:
        self._refused[REFUSE_MAX_CONNECTIONS] += 1
        refused = self._refused[REFUSE_MAX_CONNECTIONS]
        if refused == 1 or refused % 1000 == 0:
            log.warning(
                "refusing connections: %d open, none idle or slow (--web.max-connections)",
                len(self._conns),
                extra={"fields": {"refused_total": refused}},
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
        if conn.state == _AUTH and conn.pending is not None:
            conn.pending[0].cancel()  # still queued: bcrypt need not run for it
        self._auth_waiting.discard(conn)
        conn.pending = None
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(conn.fd)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _on_event(self, conn: _Conn, ev: int) -> None:
        state = conn.state
        if state in (_AUTH, _APP) or conn.ready:  # only hang-ups are watched while waiting
            if ev & (_ERR | _HANGUP):
                log.debug("%s hung up while its request waited", conn.peer)
                self._close(conn)
            return
        conn.last_active = time.monotonic()
        if state == _HANDSHAKE:
            self._handshake(conn)
        elif state == _READ:
            self._read(conn)
        elif state == _WRITE:
            self._flush(conn)

    def _handshake(self, conn: _Conn) -> None:
        sock: ssl.SSLSocket = conn.sock  # type: ignore[assignment]
        if not conn.started:
            conn.started = True
            conn.request_started = time.monotonic()
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
            self._request_started(conn, time.monotonic())
        self._process(conn)

    def _request_started(self, conn: _Conn, now: float) -> None:
        # The header deadline counts from the first byte: a byte now and then does not
        # move it.
        conn.started = True
        conn.request_started = now
        self._set_deadline(conn, self.limits.header_timeout, now)

    def _process(self, conn: _Conn) -> None:
        """Serve the next complete request in the buffer: one per connection per turn."""
        if conn.state != _READ or self._conns.get(conn.fd) is not conn:
            return
        buf = conn.buf = conn.buf.lstrip(b"\r\n")  # RFC 9112: blank lines before a request
        end, sep = _head_end(buf)
        if end < 0 or end > MAX_HEADER_BYTES:
            if len(buf) > MAX_HEADER_BYTES:
                self._error(conn, 431, "request headers too large")
            elif conn.tls and conn.sock.pending():  # type: ignore[attr-defined]
                self._read(conn)  # bytes already decrypted: epoll would not report them
            else:
                self._set_events(conn, _IN)
            return
        if conn.served_turn == self._turn:
            # It had its request this turn: the others get theirs first. Its bytes stay
            # unread meanwhile (a hang-up is still seen).
            conn.ready = True
            self._ready.append(conn)
            self._set_events(conn, _HANGUP)
            return
        conn.served_turn = self._turn
        head, conn.buf = buf[:end], buf[end + sep :]
        try:
            req = _parse_request(head)
        except _BadRequest as e:
            self._error(conn, e.status, str(e))
            return
        if req.has_body:  # no route takes a body: answer, then close (it is unread)
            req.close = True
        if self._authorized(conn, req):
            self._answer(conn, req)

    def _answer(self, conn: _Conn, req: _Request) -> None:
        """Ask the app; send its response now, or park the connection on its future."""
        try:
            result: AppResult = self.app.handle(req.method, req.target, req.headers)
        except Exception as e:
            self._log_once(e, f"error handling {req.method} {req.target}")
            result = _internal_error()
        if isinstance(result, Response):
            self._respond(conn, req, result)
        elif result.done():  # answered already: no need to park
            self._respond(conn, req, self._app_response(result, req))
        else:
            self._park(conn, _APP, result, req, self.limits.app_timeout)

    def _park(
        self,
        conn: _Conn,
        state: int,
        future: concurrent.futures.Future[Any],
        req: _Request,
        timeout: float,
    ) -> None:
        """Wait for `future` without blocking the loop: the connection is unread (its
        next request waits), busy (never evicted as idle) and watched only for a hang-up.
        The callback may run on any thread: it only queues the connection and wakes the
        loop, which then sends the answer (_finish_waits)."""
        conn.state = state
        conn.pending = (future, req)
        self._set_events(conn, _HANGUP)
        self._set_deadline(conn, timeout, time.monotonic())
        future.add_done_callback(lambda f: self._completed(conn, f))

    def _completed(self, conn: _Conn, future: concurrent.futures.Future[Any]) -> None:
        self._done.append((conn, future))
        self._wake()

    def _finish_waits(self) -> None:
        while self._done:
            conn, future = self._done.popleft()
            pending = conn.pending
            if self._conns.get(conn.fd) is not conn or pending is None or pending[0] is not future:
                continue  # closed (hang-up, deadline, eviction) while it waited
            req = pending[1]
            state, conn.state, conn.pending = conn.state, _READ, None
            if state == _APP:
                self._guarded(conn, self._respond, conn, req, self._app_response(future, req))
            else:
                self._auth_waiting.discard(conn)
                self._guarded(conn, self._auth_checked, conn, req, future)

    def _app_response(self, future: Future, req: _Request) -> Response:
        try:
            return future.result()
        except Exception as e:  # CancelledError included
            self._log_once(e, f"error handling {req.method} {req.target}")
            return _internal_error()

    def _log_once(self, e: Exception, what: str) -> None:
        """A failure here is a bug (client input never raises): its traceback once per
        kind of failure, then a debug line each time, so that a client repeating the
        request cannot fill the log."""
        kind = f"{type(e).__qualname__}: {e}"[:200]
        if kind in self._errors_logged or len(self._errors_logged) >= 100:
            log.debug("%s: %s", what, kind)
            return
        self._errors_logged.add(kind)
        log.error("%s (logged once; repeats at debug level)", what, exc_info=e)

    # ---- basic auth ------------------------------------------------------------------

    def _authorized(self, conn: _Conn, req: _Request) -> bool:
        """True to serve now; False when answered (401, 503) or the check went to bcrypt."""
        auth = self.web.auth
        if auth is None:
            return True
        creds = BasicAuth.parse_header(req.headers.get("authorization"))
        if creds is None:
            # No bcrypt was spent: the connection stays open, as a browser sends its
            # first request without credentials and the next with them.
            self._respond(conn, req, _unauthorized())
            return False
        if auth.cached(*creds):
            return True
        if len(self._auth_waiting) >= self.limits.auth_queue:
            self._refused[REFUSE_AUTH_QUEUE] += 1
            log.debug("%s: bcrypt queue full", conn.peer)
            req.close = True
            r = Response.text(503, "too many authentication checks waiting; retry")
            r.headers.append(("Retry-After", "1"))
            self._respond(conn, req, r)
            return False
        if self._auth_pool is None:
            import concurrent.futures  # only with basic auth

            self._auth_pool = concurrent.futures.ThreadPoolExecutor(1, "bcrypt")
        self._auth_waiting.add(conn)
        conn.request_started = time.monotonic()  # its place in the queue (eviction order)
        job = self._auth_pool.submit(auth.check, *creds)
        self._park(conn, _AUTH, job, req, self.limits.auth_timeout)
        return False

    def _auth_checked(
        self, conn: _Conn, req: _Request, job: concurrent.futures.Future[bool]
    ) -> None:
        try:
            ok = job.result()
        except Exception as e:
            self._log_once(e, "basic auth check failed")
            ok = False
        if ok:
            self._answer(conn, req)
            return
        # A wrong password closes the connection after the 401: otherwise its next
        # pipelined request (the next guess) would go straight back to bcrypt, and one
        # connection could keep the helper thread busy. A new guess costs a new
        # connection, which the connection cap and the bcrypt queue bound.
        req.close = True
        self._respond(conn, req, _unauthorized())

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
        if conn.buf:  # a pipelined request (or its start) is here already
            self._request_started(conn, now)
            self._process(conn)
        else:
            conn.started = False
            self._set_deadline(conn, self.limits.idle_timeout, now)
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
