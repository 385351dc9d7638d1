"""Which connections the server keeps: the per-connection record and its states, the
connection cap and whom to close to make room, and the bounded queue of bcrypt checks.

At most `max_connections` connections. At the cap, to make room for a new one the server
closes, in this order: the oldest partial request older than a short grace (a slow header
sender), the oldest connection still queued for a bcrypt check, the oldest idle keep-alive
connection. Only when none of those exists is the new connection refused.

At most `auth_queue` connections wait for bcrypt (50-250 ms a check, by design), checked
one at a time on one helper thread as exporter-toolkit does; more get a 503 at once.
"""

from __future__ import annotations

import collections
import enum
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from ksm_exporter.daemon.web.http1 import Request, RequestParser

if TYPE_CHECKING:
    import concurrent.futures

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 512

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


class ConnState(enum.IntEnum):
    HANDSHAKE = 0  # TLS handshake in progress
    READ = 1  # waiting for (the rest of) a request, or for its turn to be served
    WRITE = 2  # a response is partly sent; the client reads slowly
    AUTH = 3  # waiting for a bcrypt check (queued or running on the helper thread)
    APP = 4  # the app answered with a future: waiting for it to complete


# Module-level names: the loop compares states on every event.
_HANDSHAKE, _READ, _AUTH = ConnState.HANDSHAKE, ConnState.READ, ConnState.AUTH

# What a waiting connection waits on: (the future, the request it answers).
Pending = tuple[Any, Request]


class Conn:
    """One connection and where it is. (A class with slots, not a dataclass: Python 3.9's
    dataclasses have no slots, and there may be thousands of these.)"""

    __slots__ = (
        "close_after",
        "deadline",
        "events",
        "fd",
        "last_active",
        "more",
        "out",
        "parser",
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

    def __init__(self, sock: socket.socket, peer: str, tls: bool, now: float, events: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.tls = tls
        self.state = _HANDSHAKE if tls else _READ
        self.started = False  # bytes of a handshake or request have arrived
        self.request_started = now  # when they did
        self.parser = RequestParser()
        self.out: Optional[memoryview] = None  # what to send next
        self.more: Optional[memoryview] = None  # and after it: the rest of a large body
        self.pending: Optional[Pending] = None  # AUTH, APP
        self.ready = False  # a complete request waits for the next turn
        self.served_turn = -1  # the loop turn of its last request
        self.close_after = False
        self.last_active = now
        self.deadline = now
        self.events = events

    @property
    def idle(self) -> bool:
        """Nothing in progress: may be closed to make room for a new connection."""
        return self.state in (_HANDSHAKE, _READ) and not self.started

    def slow_since(self, now: float, grace: float) -> Optional[float]:
        """When its partial request (or TLS handshake) started, if that is more than
        `grace` ago; None otherwise."""
        partial = self.state in (_HANDSHAKE, _READ) and self.started and not self.ready
        if partial and now - self.request_started >= grace:
            return self.request_started
        return None

    def queued_for_auth(self) -> bool:
        """Waiting for a bcrypt check that has not started (it can be cancelled)."""
        return self.state == _AUTH and self.pending is not None and not self.pending[0].running()


class AuthQueue:
    """Connections waiting for a bcrypt check: at most `size`, checked one at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.waiting: set[Conn] = set()
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def __len__(self) -> int:
        return len(self.waiting)

    def full(self) -> bool:
        return len(self.waiting) >= self.size

    def submit(
        self, conn: Conn, check: Callable[..., bool], *args: Any
    ) -> concurrent.futures.Future[bool]:
        if self._pool is None:
            import concurrent.futures  # only with basic auth

            self._pool = concurrent.futures.ThreadPoolExecutor(1, "bcrypt")
        self.waiting.add(conn)
        return self._pool.submit(check, *args)

    def discard(self, conn: Conn) -> None:
        self.waiting.discard(conn)

    def queued(self) -> list[Conn]:
        """Those whose check has not started (closing one cancels its check)."""
        return [c for c in self.waiting if c.queued_for_auth()]

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class Admission:
    """The cap and the bcrypt queue, with their counters (the exporter's own metrics)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.auth = AuthQueue(limits.auth_queue)
        self._refused: collections.Counter[str] = collections.Counter()
        self._evicted: collections.Counter[str] = collections.Counter()
        # Read by the metrics thread while the loop writes.
        self._lock = threading.Lock()

    def counters(self) -> ConnectionCounters:
        with self._lock:
            return ConnectionCounters(dict(self._refused), dict(self._evicted))

    def victim(self, conns: Iterable[Conn], now: float) -> Optional[tuple[Conn, str]]:
        """The connection to close to make room for a new one, and why: the oldest slow
        partial request, else the oldest connection queued for bcrypt, else the oldest
        idle one. None when there is none of these (then the new one is refused)."""
        grace = self.limits.slow_request_grace
        conns = list(conns)
        slow = [(t, c) for c in conns if (t := c.slow_since(now, grace)) is not None]
        if slow:
            return min(slow, key=lambda tc: tc[0])[1], EVICT_SLOW_REQUEST
        queued = self.auth.queued()
        if queued:
            return min(queued, key=lambda c: c.request_started), EVICT_AUTH_QUEUE
        idle = [c for c in conns if c.idle]
        if idle:
            return min(idle, key=lambda c: c.last_active), EVICT_IDLE
        return None

    def evicted(self, reason: str) -> None:
        with self._lock:
            self._evicted[reason] += 1

    def refused(self, reason: str) -> int:
        """Count one refusal; the total for `reason` so far."""
        with self._lock:
            self._refused[reason] += 1
            return self._refused[reason]
