"""Hostile HTTP servers on 127.0.0.1 for the commands that read a server: each answers with
raw bytes chosen by the test (a slow drip, a huge body, an escape-laden reason phrase,
a redirect elsewhere), serves a bounded number of connections, and stops on exit."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

# How each connection is answered: gets the socket (the request already read), writes.
Answer = Callable[[socket.socket], None]


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def hostile_server(answer: Answer, connections: int = 4) -> Iterator[str]:
    """Serve at most `connections` connections with `answer`; yield the base URL
    (http://127.0.0.1:PORT). Each connection is closed when its answer returns or the
    server stops, whichever comes first."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(connections)
    listener.settimeout(0.2)
    stop = threading.Event()
    open_conns: list[socket.socket] = []

    def serve_one(conn: socket.socket) -> None:
        with conn:
            try:
                read_request(conn)
                answer(conn)
            except OSError:  # the client left: what a hostile server expects
                pass

    def accept() -> None:
        served = 0
        while not stop.is_set() and served < connections:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            served += 1
            open_conns.append(conn)
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()
        for conn in open_conns:  # unblocks an answer still writing
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def raw(response: bytes) -> Answer:
    return lambda conn: conn.sendall(response)


def ok(body: bytes, content_type: bytes = b"application/json") -> Answer:
    return raw(
        b"HTTP/1.1 200 OK\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )


def drip(data: bytes, every: float, stop_after: float) -> Answer:
    """One byte every `every` seconds, for at most `stop_after` seconds."""

    def answer(conn: socket.socket) -> None:
        end = time.monotonic() + stop_after
        for byte in data:
            if time.monotonic() > end:
                return
            conn.sendall(bytes([byte]))
            time.sleep(every)

    return answer


def endless(header: bytes, chunk: bytes, most: int) -> Answer:
    """`header`, then `chunk` again and again, `most` bytes in all."""

    def answer(conn: socket.socket) -> None:
        conn.sendall(header)
        sent = 0
        while sent < most:
            conn.sendall(chunk)
            sent += len(chunk)

    return answer


def redirect(location: str) -> Answer:
    return raw(
        b"HTTP/1.1 302 Found\r\nLocation: " + location.encode() + b"\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n"
    )
