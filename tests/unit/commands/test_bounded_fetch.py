"""`transitions --url` against hostile servers on loopback: bounded in size, nesting, time
and where it goes, whatever the server does (tests/system/test_attacks.py runs the command
itself against the slow drip and the 100 MB answer)."""

from __future__ import annotations

import json
import time

import pytest

from ksm_exporter.commands.bounded_fetch import (
    MAX_BODY_BYTES,
    BadUrl,
    FetchError,
    fetch,
    fetch_json,
)
from ksm_exporter.commands.transitions import from_url
from ksm_exporter.daemon.web import transitions_json
from tests.support.hostile_http import drip, endless, hostile_server, ok, raw, redirect

ENTRY = {"from": "stopped", "to": "running", "run": 1, "timestamp": 1.0e9}


def test_an_answer_within_the_bounds_is_read() -> None:
    with hostile_server(ok(json.dumps([ENTRY]).encode())) as url:
        history, problems = from_url(url + "/transitions")
    assert [t.timestamp for t in history] == [1.0e9] and problems == []


def test_nesting_past_the_bound_is_refused_without_recursion() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with hostile_server(ok(deep)) as url, pytest.raises(FetchError, match="nested deeper"):
        fetch_json(url)


def test_a_number_no_field_holds_is_that_entrys_error() -> None:
    huge = dict(ENTRY, timestamp=10**309)
    body = json.dumps([ENTRY, huge, dict(ENTRY, run=float("nan"))]).encode()
    with hostile_server(ok(body)) as url:
        history, problems = from_url(url)
    assert len(history) == 1
    assert problems == [
        "entry 2: timestamp: not a finite time between 1970 and now",
        "entry 3: run: not a whole number from 0 to 18446744073709551615",
    ]


@pytest.mark.parametrize(
    "answer",
    [
        # Said to be 100 MB: refused before a byte of it is read.
        raw(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n" + b"[" * 1000),
        # No length, sent until the client leaves (at most 40 MiB here).
        endless(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n[", b"0," * 32768, 40 * 2**20),
    ],
    ids=["content-length", "unbounded"],
)
def test_an_answer_past_the_size_bound_is_refused(answer: object) -> None:
    refused = pytest.raises(FetchError, match=r"more than 1 MiB|larger than 1 MiB")
    with hostile_server(answer) as url, refused:  # type: ignore[arg-type]
        fetch(url, limit=2**20)


def test_one_deadline_for_the_whole_answer() -> None:
    # A byte every 0.4 s: each read returns well within urllib's per-read timeout of 1 s,
    # so only a deadline for the whole answer stops it.
    answer = drip(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n[1,2,3,4]", 0.4, 30)
    with hostile_server(answer) as url:
        started = time.monotonic()
        with pytest.raises(FetchError, match="no complete answer within 1 s"):
            fetch(url, timeout=1.0)
        assert time.monotonic() - started < 5  # 1 s, and ample room for a loaded machine


@pytest.mark.parametrize(
    "location", ["ftp://127.0.0.1/transitions", "file:///etc/passwd", "http://127.0.0.2:1/"]
)
def test_no_redirect_to_another_scheme_or_host(location: str) -> None:
    # urllib refuses file:// itself, with its own words.
    refused = pytest.raises(FetchError, match=r"host or port, not followed|is not allowed")
    with hostile_server(redirect(location)) as url, refused:
        fetch(url)


def test_a_redirect_on_the_same_server_is_followed() -> None:
    answers = iter([redirect("/transitions"), ok(json.dumps([ENTRY]).encode())])
    with hostile_server(lambda conn: next(answers)(conn)) as url:
        assert json.loads(fetch(url + "/other")) == [ENTRY]


def test_a_reason_phrase_is_given_as_sent() -> None:
    # Escaped by the command for the terminal (test_terminal_text, test_commands).
    reason = b"Oops \x1b]0;owned\x07\x1b[2J"
    answer = raw(b"HTTP/1.1 500 " + reason + b"\r\nContent-Length: 0\r\n\r\n")
    with hostile_server(answer) as url, pytest.raises(FetchError) as e:
        fetch(url)
    assert str(e.value) == "HTTP 500 " + reason.decode("latin-1")


@pytest.mark.parametrize("url", ["127.0.0.1:9941", "ftp://127.0.0.1/", "http://[::1"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(BadUrl):
        fetch(url)


def test_garbage_instead_of_http_is_one_error() -> None:
    with hostile_server(raw(b"SSH-2.0-OpenSSH_9.2\r\n" * 3)) as url, pytest.raises(FetchError):
        fetch(url, timeout=5)


def test_the_bound_holds_the_largest_page_the_exporter_serves() -> None:
    assert MAX_BODY_BYTES >= transitions_json.MAX_BYTES
