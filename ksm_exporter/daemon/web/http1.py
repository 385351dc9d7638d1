"""HTTP/1.x without I/O: request heads in, response bytes out (server.py does the sockets).

A strict parser for the requests a scraper or a browser sends: exactly HTTP/1.0 or
HTTP/1.1, no control bytes, headers at most MAX_HEADER_BYTES, a Content-Length of at most
MAX_CONTENT_LENGTH_DIGITS digits. Every bad input raises BadRequest (with the status to
answer); nothing else escapes. No route takes a body, so a request with one is answered
and the connection closed, its body unread.

Why not h11: the same checks here are ~100 lines with no dependency; h11 is ~2,500 lines
(one more runtime dependency) and parses a typical scrape request ~8x slower (46 against
6 us); it takes HTTP/2.0 request lines and refuses HTTP/1.1 without Host, and its
connection state machine would duplicate the loop's. docs/design/http-parser.md has the
measurement.
"""

from __future__ import annotations

import http
import re
from collections.abc import Iterable

MAX_HEADER_BYTES = 16 * 1024
# A longer Content-Length is no body this server would read; int() of thousands of
# digits would also raise (Python's limit on int-from-str digits).
MAX_CONTENT_LENGTH_DIGITS = 18

REASONS = {s.value: s.phrase for s in http.HTTPStatus}

# RFC 9110 tokens (methods, header names); control bytes other than tab anywhere.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
# A field value we may send: no control character but tab, as Go's net/http checks
# (httpguts.ValidHeaderFieldValue), and Latin-1, which is how it goes on the wire; Latin-1's
# C1 controls (0x80-0x9f, NEL among them) are left out too.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\xa0-\xff]*")

# The answer to a connection refused at the cap, before any request was parsed.
SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


class BadRequest(Exception):
    """The request cannot be served: answer `status`, then close."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class Request:
    __slots__ = ("close", "has_body", "headers", "method", "target")

    def __init__(
        self, method: str, target: str, headers: dict[str, str], close: bool, has_body: bool
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers  # lower-case names; repeated ones joined with ", "
        self.close = close  # the connection closes after the answer
        self.has_body = has_body


def is_token(name: str) -> bool:
    """An RFC 9110 token (a valid header name)."""
    return _TOKEN.fullmatch(name) is not None


def is_field_value(value: str) -> bool:
    """A header value we may send: Latin-1 without control characters (tab allowed)."""
    return _FIELD_VALUE.fullmatch(value) is not None


def parse_request(head: bytes) -> Request:
    """Request line and headers (without the blank line). Raises BadRequest."""
    lines = [line.removesuffix("\r") for line in head.decode("latin-1").split("\n")]
    if any(_CONTROL.search(line) for line in lines):
        raise BadRequest(400, "control character in the request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if _VERSION.fullmatch(version):
            raise BadRequest(505, "unsupported HTTP version")
        raise BadRequest(400, "malformed HTTP version")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise BadRequest(400, "malformed header line")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    tokens = headers.get("connection", "").lower()
    close = "keep-alive" not in tokens if version == "HTTP/1.0" else "close" in tokens
    length = headers.get("content-length")
    if length is not None:
        # isdigit() alone takes "²" (latin-1), which int() then refuses.
        if not (length.isascii() and length.isdigit()):
            raise BadRequest(400, "bad Content-Length")
        if len(length) > MAX_CONTENT_LENGTH_DIGITS:
            raise BadRequest(400, "Content-Length too long")
    has_body = "transfer-encoding" in headers or (length is not None and int(length) > 0)
    if has_body:  # no route takes a body: answer, then close (it stays unread)
        close = True
    return Request(method, target, headers, close, has_body)


def head_end(buf: bytes) -> tuple[int, int]:
    """Where the request head in `buf` ends and the length of its blank line; (-1, 0)
    while incomplete. Bare LF line ends are taken too."""
    end, sep = buf.find(b"\r\n\r\n"), 4
    lf = buf.find(b"\n\n")
    if lf >= 0 and (end < 0 or lf < end):
        end, sep = lf, 2
    return end, sep


class RequestParser:
    """The bytes a connection received, cut into requests. Whatever the chunks the bytes
    arrive in, the same requests (and the same error) come out; it holds at most
    MAX_HEADER_BYTES of an incomplete request before that is an error (431)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = b""

    def __len__(self) -> int:
        """Bytes received and not yet taken as a request."""
        return len(self.buf)

    def feed(self, data: bytes) -> None:
        self.buf += data

    def ready(self) -> bool:
        """next_request() has something to say: a complete head, or an error."""
        # RFC 9112: blank lines before a request are ignored.
        buf = self.buf = self.buf.lstrip(b"\r\n")
        end, _ = head_end(buf)
        return 0 <= end <= MAX_HEADER_BYTES or len(buf) > MAX_HEADER_BYTES

    def next_request(self) -> Request | None:
        """The next complete request, taken from the buffer; None while incomplete.
        Raises BadRequest (the connection cannot go on after one)."""
        buf = self.buf = self.buf.lstrip(b"\r\n")
        end, sep = head_end(buf)
        if end < 0 or end > MAX_HEADER_BYTES:
            if len(buf) > MAX_HEADER_BYTES:
                raise BadRequest(431, "request headers too large")
            return None
        head, self.buf = buf[:end], buf[end + sep :]
        return parse_request(head)


def head(status: int, fields: Iterable[tuple[str, str]], length: int, *, close: bool) -> bytes:
    """Status line, `fields`, Content-Length (and Connection: close) and the blank line.
    Field values must be Latin-1 (webconfig checks the configured ones)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, '')}"]
    lines += [f"{k}: {v}" for k, v in fields]
    lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")
