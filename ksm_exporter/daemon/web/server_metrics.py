"""The HTTP server's own counters, as metrics (daemon/own_metrics.py puts them beside
the process metrics, so that --web.disable-exporter-metrics leaves them out too)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from ksm_exporter.daemon.web.admission import (
    EVICT_AUTH_QUEUE,
    EVICT_IDLE,
    EVICT_SLOW_REQUEST,
    REFUSE_AUTH_QUEUE,
    REFUSE_MAX_CONNECTIONS,
    ConnectionCounters,
)


def connection_metrics(c: ConnectionCounters) -> Iterator[Metric]:
    """ksm_exporter_http_connections_{refused,evicted}_total{reason}; every reason is
    present from the start (at 0), so that rate() sees the first one."""
    refused = CounterMetricFamily(
        "ksm_exporter_http_connections_refused",
        "Connections or requests the HTTP server turned away: max_connections (a new "
        "connection at --web.max-connections with nothing to evict), auth_queue (a "
        "request while too many wait for a basic auth check).",
        labels=["reason"],
    )
    for reason in (REFUSE_MAX_CONNECTIONS, REFUSE_AUTH_QUEUE):
        refused.add_metric([reason], c.refused.get(reason, 0))
    yield refused
    evicted = CounterMetricFamily(
        "ksm_exporter_http_connections_evicted",
        "Connections closed at --web.max-connections to make room for a new one: "
        "slow_request (headers arriving slowly), auth_queue (waiting for a basic auth "
        "check), idle (keep-alive between requests).",
        labels=["reason"],
    )
    for reason in (EVICT_SLOW_REQUEST, EVICT_AUTH_QUEUE, EVICT_IDLE):
        evicted.add_metric([reason], c.evicted.get(reason, 0))
    yield evicted
