"""Malformed requests and the status each must get: one table, checked at the parser
(tests/unit/daemon/web/test_http1.py) and against the real exporter (test_attacks.py)."""

from __future__ import annotations

MALFORMED: list[tuple[bytes, int]] = [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\n\r\n", 400),
    (b"GET /\x00 HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.\r\n\r\n", 400),
    (b"GET / HTTP/1.1x\r\n\r\n", 400),
    (b"GET / HTTP/1.10\r\n\r\n", 400),
    (b"GET / http/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTP/3.0\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX\x01A: 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", 400),  # latin-1 superscript 2
    (b"GET / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nContent-Length: " + b"0" * 19 + b"\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
]
