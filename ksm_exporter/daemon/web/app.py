"""Routes of the exporter: /metrics, /, /transitions, /-/healthy."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from ksm_exporter.daemon.web.landing import render_landing
from ksm_exporter.readers.vm_processes import VmProcess
from ksm_exporter.state.monitor import KsmMonitor

log = logging.getLogger(__name__)


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


# Below this size gzip costs more CPU than the bytes it saves on a LAN.
GZIP_MIN_BYTES = 1024


class ExporterApp:
    def __init__(
        self,
        registry: CollectorRegistry,
        monitor: KsmMonitor,
        healthy: Callable[[], tuple[bool, str]],
        telemetry_path: str = "/metrics",
        vm_processes: Callable[[], Sequence[VmProcess] | None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.monitor = monitor
        self.healthy = healthy
        self.telemetry_path = telemetry_path
        self.vm_processes = vm_processes  # the landing page's VMs; None: not collected

    def handle(self, method: str, path: str, headers: dict[str, str]) -> Response:
        if method not in ("GET", "HEAD"):
            r = Response.text(405, "method not allowed")
            r.headers.append(("Allow", "GET, HEAD"))
            return r
        path = path.split("?", 1)[0]
        if path == self.telemetry_path:
            return self.metrics(headers)
        if path == "/":
            snap = self.monitor.scrape()
            html = render_landing(
                snap, self.monitor.tracker_state(), self.telemetry_path, self.vm_processes()
            )
            return Response(200, "text/html; charset=utf-8", html.encode())
        if path == "/transitions":
            history = [t.to_json() for t in self.monitor.tracker_state().history]
            return Response(200, "application/json", json.dumps(history, indent=1).encode())
        if path == "/-/healthy":
            ok, why = self.healthy()
            return Response.text(200 if ok else 503, why)
        return Response.text(404, "not found")

    def metrics(self, headers: dict[str, str]) -> Response:
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        try:
            body = encoder(self.registry)
        except Exception:  # a bug in a collector: say so, keep serving
            log.exception("collecting metrics failed")
            return Response.text(500, "error collecting metrics; see the exporter's log")
        response = Response(200, content_type, body)
        if len(body) >= GZIP_MIN_BYTES and "gzip" in headers.get("accept-encoding", ""):
            response.body = gzip.compress(body, compresslevel=1)
            response.headers.append(("Content-Encoding", "gzip"))
        return response
