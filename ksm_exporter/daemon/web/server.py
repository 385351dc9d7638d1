"""The HTTP server around ExporterApp: one event-loop thread on non-blocking sockets.

http1.py parses requests and frames responses (no I/O); admission.py decides which
connections stay (the cap, eviction, the bcrypt queue); this module is the loop.

Why not prometheus-client's start_http_server: with TLS it runs the handshake in the
accept loop (one client that never sends a ClientHello blocks every other scrape), it
keeps a thread per idle connection forever, and it writes headers and body in separate
sends, which on a keep-alive connection waits on delayed ACKs (~40 ms a scrape).

Why one event loop (epoll) and not a pool of threads or asyncio:
- Idle connections cost a file descriptor and a small object each, not a thread: 500 idle
  keep-alive connections, or 500 clients that never finish a TLS handshake, are just
  entries in the epoll set, and none of them can hold up another connection.
- Every socket operation is non-blocking. Accepting only accepts; a TLS handshake is
  stepped forward when the client's bytes arrive, so a silent client costs nothing and a
  slow one is cut off by its deadline. Nothing waits on a client.
- The app answers either at once (a Response) or later (a Future its worker threads
  complete): then the connection is parked, the loop goes on serving the others, and the
  future's completion wakes the loop (a byte on a pipe) to send the answer.
- The one slow step of the server itself, bcrypt, runs on a single helper thread
  (admission.AuthQueue), so wrong passwords cannot stall scrapes; successful checks are
  cached, so an authenticated scrape stays fast.
- What makes a server long is policy (one request per connection per turn, eviction,
  the bcrypt queue, deadlines per state); asyncio has none of it, and a task per
  connection costs more than an entry in the epoll set.

Fairness and limits on what a connection can cost:
- One request per connection per turn of the loop: a connection that pipelines 100
  requests gets one answered, then waits (its bytes unread) while every other connection
  with a request gets its turn. One client delays the others by about one request's work.
- Deadlines per connection: TLS handshake, request headers counted from the first byte of
  the request (not reset by each byte), idle keep-alive, writing a response to a slow
  reader, waiting for a bcrypt check, waiting for the app.
- Bad input is a 4xx and a debug line, never a traceback (http1.BadRequest).
- The connection cap and the bcrypt queue: see admission.py. A wrong password closes the
  connection after its 401, so a client cannot queue check after check on one
  connection: each new guess costs it a new connection, which the cap and the queue bound.

Each response (status line, headers and body) goes out in one send(): see above.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import resource
import select
import socket
import ssl
import threading
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Union

from ksm_exporter import __version__
from ksm_exporter.daemon.health import Heartbeat
from ksm_exporter.daemon.threads import set_native_thread_name
from ksm_exporter.daemon.web import http1
from ksm_exporter.daemon.web.admission import (
    REFUSE_AUTH_QUEUE,
    REFUSE_MAX_CONNECTIONS,
    Admission,
    Conn,
    ConnectionCounters,
    ConnState,
    Limits,
)
from ksm_exporter.daemon.web.app import ExporterApp, Response
from ksm_exporter.daemon.web.http1 import BadRequest, Request
from ksm_exporter.daemon.web.webconfig import BasicAuth, WebConfig

if TYPE_CHECKING:
    import concurrent.futures

    # What app.handle returns: an answer now, or one that a worker thread completes later.
    Future = concurrent.futures.Future[Response]
    AppResult = Union[Response, Future]

__all__ = ["ExporterHTTPServer", "Limits", "ListenAddressError", "raise_fd_limit"]

log = logging.getLogger(__name__)

RECV_BYTES = 64 * 1024
# At most this much of a response per send(), one send per connection per turn: 20 clients
# taking an 8 MB /transitions each delay a scrape by 20 such sends, not by 160 MB of copies.
SEND_BYTES = 256 * 1024
SERVER = f"ksm-exporter/{__version__}"

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

# Module-level names: compared on every event.
_HANDSHAKE, _READ, _WRITE = ConnState.HANDSHAKE, ConnState.READ, ConnState.WRITE
_AUTH, _APP = ConnState.AUTH, ConnState.APP


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


class ExporterHTTPServer:
    def __init__(
        self,
        address: str,
        app: ExporterApp,
        web: WebConfig | None = None,
        limits: Limits | None = None,
        heartbeat: Heartbeat | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.app = app
        self.web = web or WebConfig()
        self.limits = limits or Limits()
        # Given by the daemon, which hands the same objects to liveness and to the
        # exporter's own metrics.
        self.heartbeat = heartbeat if heartbeat is not None else Heartbeat()
        self.admission = admission if admission is not None else Admission(self.limits)
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
        self._conns: dict[int, Conn] = {}
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._started = threading.Event()
        self._next_sweep = float("inf")
        self._date = (0, "")
        self._turn = 0
        # Connections with a complete request that had theirs this turn: served next turn.
        self._ready: list[Conn] = []
        # Futures (bcrypt checks, app answers) that completed: appended by whatever thread
        # completed them, taken by the loop after a wake.
        self._done: collections.deque[tuple[Conn, concurrent.futures.Future[Any]]]
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
        return self.admission.counters()

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
        self.heartbeat.beat()
        self._started.set()
        try:
            while not self._stop:
                self._run_once()
                self.heartbeat.beat()
        finally:
            self._stopped.set()

    def seconds_since_turn(self) -> float:
        """Seconds since the loop last completed a turn. It turns at least once every
        MAX_POLL_SECONDS, so a large value means the loop is stuck (or not running)."""
        return self.heartbeat.seconds_since()

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
        self.admission.auth.shutdown()

    def connection_count(self) -> int:
        return len(self._conns)

    def auth_waiting(self) -> int:
        """Connections waiting for a bcrypt check (at most limits.auth_queue)."""
        return len(self.admission.auth)

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

    def _guarded(self, conn: Conn, step: Any, *args: Any) -> None:
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
                log.debug("closing %s: timed out (%s)", conn.peer, conn.state.name)
                self._close(conn)
            elif conn.deadline < nearest:
                nearest = conn.deadline
        # Deadlines move later with activity, so sweeping more often than 4 times a
        # second would mostly find nothing to do.
        self._next_sweep = max(nearest, now + 0.25) if nearest != float("inf") else nearest

    def _set_deadline(self, conn: Conn, seconds: float, now: float) -> None:
        conn.deadline = now + seconds
        if conn.deadline < self._next_sweep:
            self._next_sweep = conn.deadline

    def _set_events(self, conn: Conn, events: int) -> None:
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
        """Close one connection to make room for a new one (admission.victim); False
        when none may be closed (then the new one is refused)."""
        found = self.admission.victim(self._conns.values(), time.monotonic())
        if found is None:
            return False
        conn, reason = found
        log.debug("closing %s to make room (%s)", conn.peer, reason)
        self.admission.evicted(reason)
        self._close(conn)
        return True

    def _refuse(self, sock: socket.socket) -> None:
        refused = self.admission.refused(REFUSE_MAX_CONNECTIONS)
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
                sock.send(http1.SERVICE_UNAVAILABLE)
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
        conn = Conn(sock, peer, ctx is not None, now, _IN)
        self._conns[conn.fd] = conn
        self._epoll.register(conn.fd, _IN)
        timeout = self.limits.handshake_timeout if conn.tls else self.limits.idle_timeout
        self._set_deadline(conn, timeout, now)

    def _close(self, conn: Conn) -> None:
        if self._conns.pop(conn.fd, None) is None:
            return
        if conn.state == _AUTH and conn.pending is not None:
            conn.pending[0].cancel()  # still queued: bcrypt need not run for it
        self.admission.auth.discard(conn)
        conn.pending = None
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(conn.fd)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _on_event(self, conn: Conn, ev: int) -> None:
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

    def _handshake(self, conn: Conn) -> None:
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

    def _read(self, conn: Conn) -> None:
        try:
            while True:
                data = conn.sock.recv(RECV_BYTES)
                if not data:
                    self._close(conn)
                    return
                conn.parser.feed(data)
                if len(conn.parser) > http1.MAX_HEADER_BYTES + RECV_BYTES:
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
        if not conn.started and len(conn.parser):
            self._request_started(conn, time.monotonic())
        self._process(conn)

    def _request_started(self, conn: Conn, now: float) -> None:
        # The header deadline counts from the first byte: a byte now and then does not
        # move it.
        conn.started = True
        conn.request_started = now
        self._set_deadline(conn, self.limits.header_timeout, now)

    def _process(self, conn: Conn) -> None:
        """Serve the next complete request in the buffer: one per connection per turn."""
        if conn.state != _READ or self._conns.get(conn.fd) is not conn:
            return
        if not conn.parser.ready():
            if conn.tls and conn.sock.pending():  # type: ignore[attr-defined]
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
        try:
            req = conn.parser.next_request()
        except BadRequest as e:
            self._error(conn, e.status, str(e))
            return
        assert req is not None  # ready() said a head is complete
        if self._authorized(conn, req):
            self._answer(conn, req)

    def _answer(self, conn: Conn, req: Request) -> None:
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
        conn: Conn,
        state: ConnState,
        future: concurrent.futures.Future[Any],
        req: Request,
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

    def _completed(self, conn: Conn, future: concurrent.futures.Future[Any]) -> None:
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
                self.admission.auth.discard(conn)
                self._guarded(conn, self._auth_checked, conn, req, future)

    def _app_response(self, future: Future, req: Request) -> Response:
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

    def _authorized(self, conn: Conn, req: Request) -> bool:
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
        queue = self.admission.auth
        if queue.full():
            self.admission.refused(REFUSE_AUTH_QUEUE)
            log.debug("%s: bcrypt queue full", conn.peer)
            req.close = True
            r = Response.text(503, "too many authentication checks waiting; retry")
            r.headers.append(("Retry-After", "1"))
            self._respond(conn, req, r)
            return False
        conn.request_started = time.monotonic()  # its place in the queue (eviction order)
        job = queue.submit(conn, auth.check, *creds)
        self._park(conn, _AUTH, job, req, self.limits.auth_timeout)
        return False

    def _auth_checked(self, conn: Conn, req: Request, job: concurrent.futures.Future[bool]) -> None:
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

    def _error(self, conn: Conn, status: int, why: str) -> None:
        log.debug("%s: %d %s", conn.peer, status, why)
        req = Request("GET", "", {}, close=True, has_body=False)
        self._respond(conn, req, Response.text(status, why))

    def _respond(self, conn: Conn, req: Request, r: Response) -> None:
        fields = [
            ("Server", SERVER),
            ("Date", self._http_date()),
            ("Content-Type", r.content_type),
            *r.headers,
            *self.web.headers,
        ]
        conn.close_after = req.close
        head = http1.head(r.status, fields, len(r.body), close=req.close)
        body = b"" if req.method == "HEAD" else r.body
        # Head and body in one send(): no waiting on a delayed ACK between them. A large
        # body goes on in SEND_BYTES pieces, one per turn, without copying it whole.
        first = SEND_BYTES - len(head)
        if len(body) <= first:
            conn.out, conn.more = memoryview(head + body), None
        else:
            conn.out, conn.more = memoryview(head + body[:first]), memoryview(body)[first:]
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        out = conn.out
        assert out is not None
        try:
            n = conn.sock.send(out[:SEND_BYTES])
        except _AGAIN:
            n = 0
        except OSError as e:
            log.debug("writing to %s: %s", conn.peer, e)
            self._close(conn)
            return
        now = time.monotonic()
        if n < len(out) or conn.more is not None:
            if n < len(out):
                conn.out = out[n:]
            else:
                conn.out, conn.more = conn.more, None
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
        if len(conn.parser):  # a pipelined request (or its start) is here already
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
