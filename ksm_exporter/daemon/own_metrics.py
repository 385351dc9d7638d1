"""The exporter's own metrics beyond ksm_exporter_*: process_*, python_info and the HTTP
server's connection counters. Assembled from the Admission the daemon gives the server, and
given to the exporter collector at construction; --web.disable-exporter-metrics leaves
them all out.

No python_gc_*: what the exporter costs is in process_* (docs/design/own-metrics.md)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ksm_exporter.daemon.web.admission import Admission
from ksm_exporter.daemon.web.server_metrics import connection_metrics


class ConnectionCollector(Collector):
    """ksm_exporter_http_connections_{refused,evicted}_total, from the admission the
    server was given."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def collect(self) -> Iterable[Metric]:
        return connection_metrics(self.admission.counters())


def own_metrics(admission: Admission) -> tuple[Collector, ...]:
    """The collectors of the exporter's own metrics. Its own process: always the real
    /proc, whatever --path.procfs says."""
    return (
        ProcessCollector(registry=None),
        PlatformCollector(registry=None),
        ConnectionCollector(admission),
    )
