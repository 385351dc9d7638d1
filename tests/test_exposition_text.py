"""The fast writer (exposition/text.py) writes what prometheus-client writes, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import CollectorRegistry

from ksm_exporter import flags
from ksm_exporter.commands import serve
from ksm_exporter.exposition.text import OPENMETRICS_EOF, Family, render, to_metric

from .support import FIXTURES

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
VALUES = st.one_of(
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
)


@st.composite
def families(draw: st.DrawFn) -> Family:
    labels = tuple(draw(st.lists(NAMES, max_size=3, unique=True)))
    samples = draw(
        st.lists(
            st.tuples(st.tuples(*[TEXT for _ in labels]), VALUES),
            max_size=4,
            unique_by=lambda s: s[0],
        )
    )
    kind = draw(st.sampled_from(["gauge", "counter"]))
    name = draw(NAMES)
    if kind == "counter" and draw(st.booleans()):
        name += "_total"
    return Family(name, draw(TEXT), kind, labels, tuple(samples))


class Collected:
    def __init__(self, fams: list[Family]) -> None:
        self.fams = fams

    def collect(self):  # type: ignore[no-untyped-def]
        return [to_metric(f) for f in self.fams]


@settings(max_examples=300, deadline=None)
@given(st.lists(families(), max_size=5))
def test_render_is_prometheus_clients_output(fams: list[Family]) -> None:
    assert render(fams, openmetrics=False).encode() == generate_latest(Collected(fams))
    om = generate_openmetrics(Collected(fams))
    assert render(fams, openmetrics=True).encode() + OPENMETRICS_EOF.encode() == om


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.iterdir()))
@pytest.mark.parametrize(
    "accept",
    ["", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"],
)
def test_metrics_match_a_plain_registry(fixture: str, accept: str) -> None:
    root = FIXTURES / fixture
    args = flags.serve_parser().parse_args(
        [
            f"--path.sysfs={root}/sys",
            f"--path.procfs={root}/proc",
            "--web.listen-address=127.0.0.1:0",
            "--web.disable-exporter-metrics",
        ]
    )
    daemon = serve.build(args)
    snap = daemon.monitor.scrape()
    daemon.monitor.scrape = lambda: snap  # type: ignore[method-assign]  # both see one read
    try:
        app = daemon.server.app
        fast = app.handle("GET", "/metrics", {"accept": accept})
        plain = CollectorRegistry()
        for c in app.registry._order:  # the same collectors, rendered by prometheus-client
            plain.register(c)
        encode = generate_openmetrics if accept else generate_latest
        assert fast.body == encode(plain)
    finally:
        daemon.server.server_close()


def test_exporter_metrics_are_served(tmp_path: Path) -> None:
    root = FIXTURES / "linux-6.18"
    args = flags.serve_parser().parse_args(
        [f"--path.sysfs={root}/sys", f"--path.procfs={root}/proc", "--web.listen-address=:0"]
    )
    daemon = serve.build(args)
    try:
        for accept in ("", "application/openmetrics-text;version=1.0.0"):
            body = daemon.server.app.handle("GET", "/metrics", {"accept": accept}).body.decode()
            assert "\nprocess_resident_memory_bytes " in body
            assert "python_gc_objects_collected_total{generation=" in body
            assert body.endswith("# EOF\n") == bool(accept)
    finally:
        daemon.server.server_close()


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "*/*",
        "text/plain",
        "text/plain;version=0.0.4",
        "text/plain;version=1.0.0",
        "application/openmetrics-text",
        "application/openmetrics-text;version=1.0.0",
        "application/openmetrics-text;version=0.0.1,text/plain;version=0.0.4;q=0.5",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
        "application/openmetrics-text;version=1.0.0;escaping=dots",
        "application/openmetrics-text;version=1.0.0;escaping=nonsense",
        "application/openmetrics-text;version=2.0.0",
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",  # Prometheus 2.x
    ],
)
def test_negotiate_agrees_with_prometheus_client(accept: str) -> None:
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.openmetrics import exposition as om

    from ksm_exporter.exposition.text import negotiate

    encoder, content_type = choose_encoder(accept)
    ours = negotiate(accept)
    if ours is None:  # left to prometheus-client: fine for any format
        return
    openmetrics, ours_type = ours
    assert ours_type == content_type
    assert openmetrics == (getattr(encoder, "func", encoder) is om.generate_latest)


def test_exporter_metrics_match_prometheus_clients_collectors() -> None:
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    from ksm_exporter.exposition.process import GcMetrics, PlatformMetrics, ProcessMetrics
    from ksm_exporter.exposition.text import FastRegistry

    for openmetrics in (False, True):
        ours = FastRegistry()
        for mine in (ProcessMetrics(), PlatformMetrics(), GcMetrics()):
            ours.register(mine)
        theirs = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=theirs)
        a = ours.encode(openmetrics).decode()
        b = (generate_openmetrics if openmetrics else generate_latest)(theirs).decode()
        # Values move between the two reads (CPU time, GC counts); names, labels, HELP and
        # TYPE lines must not.
        assert [line.rpartition(" ")[0] for line in a.splitlines()] == [
            line.rpartition(" ")[0] for line in b.splitlines()
        ]
        assert "\npython_info{" in a
