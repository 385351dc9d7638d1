"""The HTTP/1 parser and framing without sockets: the malformed-request table, and any
bytes in any chunks."""

from __future__ import annotations

import http.client
import io
from typing import Optional, Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ksm_exporter.daemon.web import http1
from ksm_exporter.daemon.web.http1 import BadRequest, Request, RequestParser
from tests.support.malformed import MALFORMED

# What one request or the error looks like, to compare two runs of the parser.
Seen = Union[tuple, int]


def summary(r: Request) -> tuple:
    return (r.method, r.target, sorted(r.headers.items()), r.close, r.has_body)


def drain(parser: RequestParser, seen: list[Seen]) -> bool:
    """Take every complete request; an error ends the connection (True)."""
    while True:
        try:
            r = parser.next_request()
        except BadRequest as e:
            seen.append(e.status)
            return True
        if r is None:
            # Bounded: an incomplete request never holds more than the limit.
            assert len(parser) <= http1.MAX_HEADER_BYTES
            return False
        seen.append(summary(r))


def parse_all(data: bytes) -> list[Seen]:
    parser = RequestParser()
    parser.feed(data)
    seen: list[Seen] = []
    drain(parser, seen)
    return seen


def one(data: bytes) -> Optional[Request]:
    parser = RequestParser()
    parser.feed(data)
    return parser.next_request()


@pytest.mark.parametrize(("request_bytes", "status"), MALFORMED)
def test_a_malformed_request_is_a_bad_request_with_its_status(
    request_bytes: bytes, status: int
) -> None:
    parser = RequestParser()
    parser.feed(request_bytes)
    assert parser.ready()
    with pytest.raises(BadRequest) as e:
        parser.next_request()
    assert e.value.status == status


def test_a_request_is_parsed() -> None:
    r = one(b"GET /metrics?x=1 HTTP/1.1\r\nAccept: a\r\nX-A: 1\r\nx-a:  2 \r\n\r\n")
    assert r is not None
    assert (r.method, r.target, r.close, r.has_body) == ("GET", "/metrics?x=1", False, False)
    assert r.headers == {"accept": "a", "x-a": "1, 2"}


@pytest.mark.parametrize(
    ("request_bytes", "close"),
    [
        (b"GET / HTTP/1.0\r\n\r\n", True),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", True),  # a body: close after
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", False),
    ],
)
def test_when_the_connection_closes_after_the_answer(request_bytes: bytes, close: bool) -> None:
    r = one(request_bytes)
    assert r is not None and r.close is close


def test_blank_lines_before_a_request_and_bare_newlines_are_taken() -> None:
    assert parse_all(b"\r\n\nGET /a HTTP/1.0\n\nGET /b HTTP/1.1\r\n\r\n") == [
        ("GET", "/a", [], True, False),
        ("GET", "/b", [], False, False),
    ]


def test_an_incomplete_request_waits_and_an_endless_one_is_a_431() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nX: ")
    assert not parser.ready() and parser.next_request() is None
    parser.feed(b"a" * http1.MAX_HEADER_BYTES)
    assert parser.ready()
    with pytest.raises(BadRequest) as e:
        parser.next_request()
    assert e.value.status == 431


# Requests built from good and bad pieces (noise alone rarely gets past the request line),
# mixed with noise and over-long heads.
REQUEST_LINES = st.sampled_from(
    [b"GET / HTTP/1.1", b"HEAD /metrics HTTP/1.0", b"GET /x HTTP/1.1", b"GET / HTTP/2.0", b"G("]
)
NUMBERS = st.sampled_from([b"0", b"5", b"-1", b"\xb2", b"5\xb2", b"1" * 19, b"9" * 5000])
HEADERS = st.one_of(
    st.sampled_from(
        [
            b"Connection: close",
            b"Connection: keep-alive",
            b"Transfer-Encoding: chunked",
            b"X: 1",
            b" folded",
            b"no colon",
            b"X-A: a\x00b",
            b"X: " + b"a" * 6000,
        ]
    ),
    NUMBERS.map(lambda digits: b"Content-Length: " + digits),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    end = draw(st.sampled_from([b"\r\n", b"\n"]))
    lines = [draw(REQUEST_LINES), *draw(st.lists(HEADERS, max_size=4))]
    return end.join(lines) + end + end


STREAMS = st.lists(
    st.one_of(requests(), st.sampled_from([b"\r\n", b"\r", b"\n"]), st.binary(max_size=20)),
    max_size=8,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=STREAMS, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_any_bytes_in_any_chunks_give_the_same_requests(data: bytes, cuts: list[int]) -> None:
    whole = parse_all(data)  # raises nothing but BadRequest (drain catches only that)
    points = sorted({c % (len(data) + 1) for c in cuts})
    parser = RequestParser()
    seen: list[Seen] = []
    for start, end in zip([0, *points], [*points, len(data)]):
        parser.feed(data[start:end])
        if drain(parser, seen):
            break
    assert seen == whole


def parse_response(raw: bytes, method: str = "GET") -> http.client.HTTPResponse:
    class Sock:
        def makefile(self, mode: str) -> io.BytesIO:
            return io.BytesIO(raw)

    r = http.client.HTTPResponse(Sock(), method=method)  # type: ignore[arg-type]
    r.begin()
    return r


def test_a_response_head() -> None:
    raw = http1.head(200, [("Content-Type", "text/plain")], 5, close=False)
    r = parse_response(raw + b"hello")
    assert (r.status, r.reason, r.getheader("Content-Length")) == (200, "OK", "5")
    assert r.read() == b"hello" and r.getheader("Connection") is None
    raw = http1.head(404, [], 4, close=True)
    r = parse_response(raw, "HEAD")
    assert r.status == 404 and r.getheader("Connection") == "close"
    assert r.getheader("Content-Length") == "4" and raw.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("default-src 'self'", True),
        ("max-age=31536000; includeSubDomains", True),
        ("caf\xe9", True),  # Latin-1 obs-text
        ("\u2018self\u2019", False),  # beyond Latin-1
        ("a\x00b", False),
        ("a\r\nSet-Cookie: x", False),
        ("a\x7f", False),
        ("\x85", False),  # a C1 control is Latin-1 but not visible
        (" padded ", True),
        ("a\tb", True),
    ],
)
def test_field_values_as_http_allows(value: str, ok: bool) -> None:
    assert http1.is_field_value(value) is ok


@pytest.mark.parametrize(
    ("name", "ok"),
    [("X-Frame-Options", True), ("", False), ("X Y", False), ("X:Y", False), ("\xe9", False)],
)
def test_header_names_are_tokens(name: str, ok: bool) -> None:
    assert http1.is_token(name) is ok
