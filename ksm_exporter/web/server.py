"""The HTTP server around ExporterApp.

Ours rather than prometheus-client's start_http_server, because that one keeps an idle
connection's thread forever (no socket timeout) and writes headers and body in separate
sends, which on a keep-alive connection waits on delayed ACKs (~40 ms a scrape).
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import __version__
from .app import ExporterApp, Response

log = logging.getLogger(__name__)

# A connection idle this long (between requests, or mid-request) is closed.
IDLE_TIMEOUT_SECONDS = 30.0


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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"ksm-exporter/{__version__}"
    timeout = IDLE_TIMEOUT_SECONDS
    server: ExporterHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.server.app.handle(self.command, self.path, headers)
        self._write(response)

    def _write(self, r: Response) -> None:
        # Status line, headers and body in one send: see the module docstring.
        lines = [
            f"{self.protocol_version} {r.status} {self.responses.get(r.status, ('',))[0]}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {r.content_type}",
            f"Content-Length: {len(r.body)}",
            *(f"{k}: {v}" for k, v in r.headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + r.body)
        self.log_request(r.status, len(r.body))

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, app: ExporterApp) -> None:
        host, port = parse_listen_address(address)
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
        # For ":port" prefer the IPv6 wildcard, which also takes IPv4 (dual stack).
        infos.sort(key=lambda i: i[0] != socket.AF_INET6 if not host else 0)
        self.address_family, _, _, _, sockaddr = infos[0]
        self.app = app
        super().__init__(sockaddr[:2], _Handler, bind_and_activate=False)
        try:
            if self.address_family == socket.AF_INET6 and not host:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise

    @property
    def port(self) -> int:
        return self.server_address[1]

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        t.start()
        return t
