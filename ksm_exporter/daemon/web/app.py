"""Routes of the exporter: /metrics, /, /transitions, /-/healthy.

handle() never waits on a read. /metrics answers with a Future that the scraper completes
by the scrape's deadline (the server's loop awaits it without blocking); /transitions
with its cached serialisation, or a Future while a new history is rendered; the other
routes answer at once from what the watcher keeps."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder

from ksm_exporter.collectors.registry import BY_NAME
from ksm_exporter.daemon.health import Health
from ksm_exporter.daemon.scrape import Scraper, scrape_timeout
from ksm_exporter.daemon.web.landing import CSP_HEADER, ChartCache, render_landing
from ksm_exporter.daemon.web.transitions_json import TransitionsDocument, mapped
from ksm_exporter.readers.vm_processes import VmProcess
from ksm_exporter.state.history import History
from ksm_exporter.state.snapshot import Snapshot
from ksm_exporter.state.transitions import TrackerState

log = logging.getLogger(__name__)

TIMEOUT_HEADER = "x-prometheus-scrape-timeout-seconds"


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def text(cls, status: int, message: str) -> Response:
        """A one-line plain-text answer (errors, health)."""
        return cls(status, "text/plain; charset=utf-8", (message + "\n").encode())


@dataclass(frozen=True)
class Watched:
    """What the watcher (and the scraper) keep, for the routes that must never wait on a
    read."""

    snapshot: Callable[[], Snapshot | None]  # its latest poll; None before the first
    transitions: Callable[[], TrackerState]
    health: Callable[[], Health]
    # The VMs of the latest scrape, as the scraper publishes them (the landing page
    # shows, never reads); None: the process collector is off or has not run yet.
    vms: Callable[[], Sequence[VmProcess] | None] = lambda: None
    history: History | None = None  # the chart's points (None: no chart)


# Below this size gzip costs more CPU than the bytes it saves on a LAN.
GZIP_MIN_BYTES = 1024


def gzip_wanted(accept_encoding: str) -> bool:
    """Whether Accept-Encoding accepts gzip (RFC 9110 12.5.3): a gzip entry decides by its
    q (q=0: not acceptable), else a `*` entry does. prometheus-client's gzip_accepted()
    ignores q, so it would send gzip to `gzip;q=0`."""
    star: bool | None = None
    for entry in accept_encoding.split(","):
        coding, *params = (part.strip() for part in entry.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding.lower() == "gzip":
            return q > 0
        if coding == "*":
            star = q > 0
    return bool(star)


class _Families:
    """One scrape's families, in the shape prometheus-client's encoders read."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class ExporterApp:
    def __init__(
        self,
        scraper: Scraper,
        watched: Watched,
        telemetry_path: str = "/metrics",
    ) -> None:
        self.scraper = scraper
        self.watched = watched
        self.telemetry_path = telemetry_path
        self._transitions = TransitionsDocument()
        # The landing page and /history are drawn by one worker, off the HTTP loop.
        self._pages = ThreadPoolExecutor(1, thread_name_prefix="ksm-page")
        self._chart = None if watched.history is None else ChartCache(watched.history)

    def handle(
        self, method: str, path: str, headers: dict[str, str]
    ) -> Response | Future[Response]:
        """`headers` with lower-case names. A Response, or a Future of one (/metrics, and
        /transitions while it renders)."""
        if method not in ("GET", "HEAD"):
            r = Response.text(405, "method not allowed")
            r.headers.append(("Allow", "GET, HEAD"))
            return r
        path, _, query = path.partition("?")
        if path == self.telemetry_path:
            return self.metrics(query, headers)
        if path == "/":
            return self._pages.submit(self.landing)
        if path == "/history" and self.watched.history is not None:
            return self._pages.submit(self.history, self.watched.history)
        if path == "/transitions":  # cached, rendered off the loop: transitions_json.py
            body = self._transitions.get(self.watched.transitions().history)
            return mapped(body, lambda b: Response(200, "application/json", b))
        if path == "/-/healthy":
            ok, why = self.watched.health()
            return Response.text(200 if ok else 503, why)
        return Response.text(404, "not found")

    def landing(self) -> Response:
        state = self.watched.transitions()
        html = render_landing(
            self.watched.snapshot(),
            state,
            self.telemetry_path,
            self.watched.vms(),
            "" if self._chart is None else self._chart.svg(state),
        )
        return Response(200, "text/html; charset=utf-8", html.encode(), [CSP_HEADER])

    def history(self, history: History) -> Response:
        """The chart's points as JSON, for `transitions --plot --url`."""
        body = json.dumps(history.series().to_json(), allow_nan=False).encode()
        return Response(200, "application/json", body)

    def selected(self, query: str) -> Sequence[str] | str:
        """The collectors ?collect[]=NAME asks for (all enabled ones without it), or why
        the request is wrong."""
        enabled = list(self.scraper.collectors)
        asked = parse_qs(query, keep_blank_values=True).get("collect[]")
        if not asked:
            return enabled
        for name in asked:
            if name not in BY_NAME:
                return f"unknown collector {name!r} in collect[] (known: {', '.join(BY_NAME)})"
            if name not in enabled:
                return f"collector {name!r} is disabled (--no-collector.{name})"
        return [name for name in enabled if name in asked]

    def metrics(self, query: str, headers: dict[str, str]) -> Future[Response]:
        response: Future[Response] = Future()
        names = self.selected(query)
        if isinstance(names, str):
            response.set_result(Response.text(400, names))
            return response
        families = self.scraper.scrape(names, scrape_timeout(headers.get(TIMEOUT_HEADER)))

        def render(done: Future[list[Metric]]) -> None:
            try:
                response.set_result(self.render(done.result(), headers))
            except Exception:  # a bug in rendering: say so, keep serving
                log.exception("rendering metrics failed")
                response.set_result(
                    Response.text(500, "error collecting metrics; see the exporter's log")
                )

        families.add_done_callback(render)
        return response

    def render(self, families: list[Metric], headers: dict[str, str]) -> Response:
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        body = encoder(_Families(families))
        response = Response(200, content_type, body)
        if len(body) >= GZIP_MIN_BYTES and gzip_wanted(headers.get("accept-encoding", "")):
            response.body = gzip.compress(body, compresslevel=1)
            response.headers.append(("Content-Encoding", "gzip"))
        return response
