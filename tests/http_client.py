"""A minimal keep-alive HTTP/1.1 client for load tests: cheap enough that the exporter,
not the client, is what a test measures."""

from __future__ import annotations

import socket
import ssl

REQUEST = b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n"


class KeepAliveClient:
    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 10) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        self.buf = b""

    def get(self, request: bytes = REQUEST) -> tuple[int, bytes]:
        """One request; (status, body). Raises on a closed connection or a timeout."""
        self.sock.sendall(request)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._recv()
        head, self.buf = self.buf[:end], self.buf[end + 4 :]
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self._recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def _recv(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data

    def close(self) -> None:
        self.sock.close()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError("no VmRSS")
