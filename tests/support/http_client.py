"""A minimal keep-alive HTTP/1.1 client for load tests and the benchmark: cheap enough
that the exporter, not the client, is what is measured. Reads Content-Length and chunked
bodies (node_exporter's Go server sends a large uncompressed body chunked)."""

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
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding") == b"chunked":
            chunks = []
            while chunk := self._chunk():
                chunks.append(chunk)
            self._take(2)  # the CRLF after the last chunk (no trailers)
            return status, b"".join(chunks)
        return status, self._take(int(headers.get(b"content-length", 0)))

    def _chunk(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._recv()
        size = int(self.buf[:end].split(b";")[0], 16)
        self.buf = self.buf[end + 2 :]
        if not size:
            return b""
        return self._take(size + 2)[:-2]

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

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
