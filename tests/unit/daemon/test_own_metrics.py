"""The exporter's own metrics and liveness, wired by serve at construction: what the
HTTP loop counts and beats is what a scrape renders and what /-/healthy judges."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from ksm_exporter.commands.serve import Daemon, build
from ksm_exporter.flags.serve import parser as serve_parser
from tests.support import copy_fixture, parse_samples

REFUSED = 'ksm_exporter_http_connections_refused_total{reason="max_connections"}'


@pytest.fixture
def built(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []
    root = copy_fixture("linux-6.18", tmp_path)

    def make(*flags: str) -> Daemon:
        args = serve_parser().parse_args(
            [
                "--web.listen-address=127.0.0.1:0",
                f"--path.sysfs={root}/sys",
                f"--path.procfs={root}/proc",
                *flags,
            ]
        )
        made.append(build(args))
        return made[-1]

    yield make
    for d in made:
        d.server.server_close()
        d.scraper.shutdown()


def scrape(d: Daemon) -> dict[str, float]:
    result = d.server.app.handle("GET", "/metrics", {})
    assert isinstance(result, Future)
    return parse_samples(result.result(30).body.decode())


def test_the_scrape_renders_the_counters_the_server_counts(built: Callable[..., Daemon]) -> None:
    d = built()
    samples = scrape(d)
    assert samples[REFUSED] == 0
    assert "process_cpu_seconds_total" in samples
    d.server.admission.refused("max_connections")  # as the loop counts a refusal
    assert scrape(d)[REFUSED] == 1


def test_disabled_exporter_metrics_leave_out_process_and_http_counters(
    built: Callable[..., Daemon],
) -> None:
    samples = scrape(built("--web.disable-exporter-metrics"))
    assert [k for k in samples if k.startswith("ksm_exporter_build_info")]
    assert not [k for k in samples if k.startswith(("process_", "python_", "ksm_exporter_http"))]


def test_liveness_reads_the_heartbeat_the_loop_beats(built: Callable[..., Daemon]) -> None:
    d = built()
    assert d.server.heartbeat is d.liveness.http_loop
    d.server.heartbeat.last -= 60  # as if the loop had not turned for a minute
    assert d.liveness() == (False, "HTTP loop stalled: no turn for 60s")
    d.server.serve_in_thread()  # the loop turns: healthy again
    try:
        assert d.liveness() == (True, "OK")
    finally:
        d.server.shutdown()
