"""A GET of a JSON page for a command (`transitions --url`), bounded whatever the server does.

The server may be anyone's (a URL typed by hand, an address reused): it must not be able
to hold the command, fill its memory or send it elsewhere.
- One total deadline: urllib's timeout is per socket operation, so a server sending one
  byte every few seconds never trips it. The request runs in a daemon thread, waited for
  until the deadline; past it the command says so and exits (the thread with it).
- At most MAX_BODY_BYTES read (a Content-Length above it is refused before reading).
- Redirects only to the same scheme, host and port (a reverse proxy's trailing slash),
  at most MAX_REDIRECTS: never to another host, nor to ftp:// or file://.
- JSON nested at most bounded_json.MAX_DEPTH deep, numbers unconverted until bounded.
Messages carry what the server said (a reason phrase) as is: the caller escapes them for
the terminal (model/terminal_text.py).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import TimeoutError as FutureTimeout
from typing import IO

from ksm_exporter import __version__
from ksm_exporter.model import bounded_json
from ksm_exporter.readers import describe_error
from ksm_exporter.state.bounded_reads import in_thread

TIMEOUT_SECONDS = 10.0
# The most the exporter's /transitions serves (daemon/web/transitions_json.py MAX_BYTES:
# the oldest entries are left out past it); it bounds the memory too (the JSON parsed takes
# a few times that).
MAX_BODY_BYTES = 16 * 2**20
MAX_REDIRECTS = 3
DEFAULT_PORTS = {"http": 80, "https": 443}


class FetchError(Exception):
    """The page could not be read: one line for the user (unescaped)."""


class BadUrl(FetchError):
    """The URL itself is wrong: nothing was sent."""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same scheme, host and port."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(  # type: ignore[no-untyped-def]
        self, req, fp, code, msg, headers, newurl
    ):
        try:
            same = _origin(newurl) == _origin(req.full_url)
        except ValueError:  # a Location urllib cannot parse: `http://[::1`
            same = False
        if not same:
            raise FetchError(
                f"redirected ({code}) to {newurl[:200]}: another scheme, host or port, not followed"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def check_url(url: str) -> None:
    """BadUrl unless `url` is an http:// or https:// URL."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme
    except ValueError as e:  # `http://[::1`
        raise BadUrl(str(e)) from None
    if scheme not in ("http", "https"):
        raise BadUrl("not an http:// or https:// URL")


def _read(response: IO[bytes], limit: int) -> bytes:
    length = response.headers.get("Content-Length")  # type: ignore[attr-defined]
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise FetchError(f"answer of {length.strip()[:20]} bytes, more than {limit >> 20} MiB")
    body = response.read(limit + 1)
    if len(body) > limit:
        raise FetchError(f"answer larger than {limit >> 20} MiB")
    return body


def _get(url: str, limit: int, timeout: float) -> bytes:
    opener = urllib.request.build_opener(SameOriginRedirects)
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": f"ksm-exporter/{__version__}"}
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return _read(response, limit)
    except urllib.error.HTTPError as e:
        raise FetchError(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason if isinstance(e.reason, str) else describe_error(e.reason)
        raise FetchError(reason) from None
    except OSError as e:  # a timeout or reset while reading the body
        raise FetchError(describe_error(e)) from None
    except ValueError as e:  # a URL urllib cannot open: `http://host:port:9`
        raise BadUrl(str(e)) from None
    # http.client.HTTPException (a status line that is none, too many headers) is not
    # an OSError: the caller's `except Exception` names it.


def fetch(url: str, limit: int = MAX_BODY_BYTES, timeout: float = TIMEOUT_SECONDS) -> bytes:
    """The body of a 200 answer to GET `url`, within `timeout` seconds in all; else
    FetchError."""
    check_url(url)
    future = in_thread(lambda: _get(url, limit, timeout), "ksm-fetch")
    try:
        return future.result(timeout)
    except FutureTimeout:
        raise FetchError(f"no complete answer within {timeout:g} s") from None
    except FetchError:
        raise
    except Exception as e:  # http.client's: a malformed status line, too many headers
        raise FetchError(f"not an HTTP answer: {type(e).__name__}: {e}") from None


def fetch_json(url: str, limit: int = MAX_BODY_BYTES, timeout: float = TIMEOUT_SECONDS) -> object:
    """fetch, parsed by bounded_json; FetchError when it is not UTF-8 JSON within bounds."""
    body = fetch(url, limit, timeout)
    try:
        return bounded_json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise FetchError("did not answer UTF-8 text") from None
    except ValueError as e:
        raise FetchError(f"did not answer JSON: {e}") from None
