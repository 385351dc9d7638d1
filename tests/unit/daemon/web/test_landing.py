"""The landing page's picture: drawn off the HTTP loop from what the watcher keeps (never
from /proc or /sys), drawn again only when the history changed, sent with a CSP."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from ksm_exporter.commands.serve import Daemon
from ksm_exporter.daemon.web import landing
from ksm_exporter.daemon.web.app import Response
from ksm_exporter.model.chart import Series
from tests.support import copy_fixture, write_ksm
from tests.support.in_process import built_daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    root = copy_fixture("linux-6.18", tmp_path)
    with built_daemon(root, f"--collector.ksmtuned.config={tmp_path}/absent.conf") as d:
        yield d, root


def get(d: Daemon, path: str) -> Response:
    result = d.server.app.handle("GET", path, {})
    assert isinstance(result, Future), "rendered on the HTTP loop"
    return result.result(30)


def test_the_page_is_drawn_off_the_loop_from_what_the_watcher_keeps(
    daemon: tuple[Daemon, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, root = daemon
    d.watcher.poll_once()
    write_ksm(root, "run", 1)
    d.watcher.poll_once()  # an edge
    drawn: list[str] = []
    render = landing.render_svg

    def counting(*args: object, **kwargs: object) -> str:
        drawn.append(threading.current_thread().name)
        return render(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(landing, "render_svg", counting)
    # Nothing to read any more: the page shows what the watcher kept.
    shutil.rmtree(root / "proc")
    shutil.rmtree(root / "sys")
    page = get(d, "/")
    assert page.status == 200
    assert ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'") in (
        page.headers
    )
    html = page.body.decode()
    assert html.index("<svg") < html.index("<h2>KSM now</h2>")  # the tables below
    assert 'data-series="mem_free_bytes"' in html and 'data-cause="unknown"' in html
    assert "<script" not in html
    assert drawn and all(name.startswith("ksm-page") for name in drawn)
    get(d, "/")
    assert len(drawn) == 1  # the same history: the same picture, not drawn again
    d.watcher.poll_once()  # a poll that cannot read: a point all the same (NaN), drawn again
    get(d, "/")
    assert len(drawn) == 2


def test_history_answers_the_points_as_json(daemon: tuple[Daemon, Path]) -> None:
    d, _root = daemon
    for _ in range(3):
        d.watcher.poll_once()
    series = Series.from_json(json.loads(get(d, "/history").body))
    assert len(series.times) == 1  # three polls within one 5 s bucket: one point
    assert series.columns["run"] == [0.0]
