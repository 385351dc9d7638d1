"""The picture as SVG: well-formed, one path per series seen, one marker per edge with its
cause, the threshold only when known, nothing from elsewhere unescaped, no script."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest

from ksm_exporter.model.chart import (
    COLUMNS,
    BadSeries,
    Mark,
    Series,
    nice_step,
    render_svg,
    running_spans,
    time_ticks,
    window,
)

SVG = "{http://www.w3.org/2000/svg}"
GIB = 2**30
NOW = 1_700_000_000.0
NAN = math.nan


def day(threshold: float = 6 * GIB) -> Series:
    rows = []
    for i in range(0, 86400, 60):
        free = 6 * GIB + GIB * math.sin(i / 86400 * 8 * math.pi)
        rows.append([NOW - 86400 + i, free, free + GIB, free + 2 * GIB, threshold, GIB, 0.0])
    return Series.from_rows(rows)


MARKS = [
    Mark(NOW - 80000, "running", "ksmtuned", "start by ksmtuned", 5 * GIB),
    Mark(NOW - 60000, "stopped", "other", "stop by other (mom)", 7 * GIB),
    Mark(NOW - 40000, "running", "unknown", "no telling", None),
    Mark(NOW - 90000, "stopped", "ksmtuned", "before the window", 5 * GIB),
]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def test_one_path_per_series_and_one_marker_per_edge_with_its_cause() -> None:
    root = parse(render_svg(day(), MARKS, NOW - 86400, NOW))
    paths = [p.get("data-series") for p in root.iter(f"{SVG}path")]
    assert sorted(p for p in paths if p) == sorted(
        [
            "mem_free_bytes",
            "mem_available_bytes",
            "ksmtuned_free_bytes",
            "ksmtuned_threshold_bytes",
            "saved_bytes",
        ]
    )
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert [(g.get("data-cause"), g.get("data-state")) for g in edges] == [
        ("ksmtuned", "running"),
        ("other", "stopped"),
        ("unknown", "running"),
    ]  # the edge before the window is not drawn
    assert [g.find(f"{SVG}title").text for g in edges] == [  # type: ignore[union-attr]
        "start by ksmtuned",
        "stop by other (mom)",
        "no telling",
    ]
    assert not list(root.iter(f"{SVG}script"))
    assert not any(k.startswith("on") for e in root.iter() for k in e.attrib)
    # KSM ran from the first start to the stop, and from the last start to now.
    bands = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "running"]
    assert len(bands) == 2 * 2  # two spans, shaded in both panels
    legend = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "ksmtuned threshold" in legend and "start / stop by other" in legend
    assert "Memory (MB)" in legend and "KSM saved (MB)" in legend


def test_the_threshold_is_drawn_only_when_known_and_gaps_are_not_bridged() -> None:
    series = day(threshold=NAN)
    root = parse(render_svg(series, [], NOW - 86400, NOW))
    names = {p.get("data-series") for p in root.iter(f"{SVG}path")}
    assert "ksmtuned_threshold_bytes" not in names
    legend = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "threshold" not in legend
    # An hour without points (the exporter was down): the line lifts its pen.
    rows = [[NOW - 7200 + 60 * i, GIB, GIB, GIB, NAN, NAN, 0.0] for i in range(30)]
    rows += [[NOW - 1800 + 60 * i, GIB, GIB, GIB, NAN, NAN, 0.0] for i in range(30)]
    root = parse(render_svg(Series.from_rows(rows), [], NOW - 7200, NOW))
    d = next(
        p.get("d") for p in root.iter(f"{SVG}path") if p.get("data-series") == "mem_free_bytes"
    )
    assert d is not None and d.count("M") == 2


def test_markup_from_names_is_escaped() -> None:
    hostile = '<script>alert(1)</script><g class="edge" onload="x">&'
    marks = [Mark(NOW - 100, "running", "other", f"other ({hostile})", GIB)]
    svg = render_svg(day(), marks, NOW - 86400, NOW, title=hostile)
    root = parse(svg)
    assert not list(root.iter(f"{SVG}script"))
    assert len([g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]) == 1
    assert "&lt;script&gt;" in svg and "<script" not in svg


def test_an_empty_history_says_so() -> None:
    root = parse(render_svg(Series.from_rows([]), [], NOW - 600, NOW))
    assert not [p for p in root.iter(f"{SVG}path") if p.get("data-series")]
    assert any("No history yet" in (t.text or "") for t in root.iter(f"{SVG}text"))


def test_axes_in_mb_and_local_time() -> None:
    assert [nice_step(x) for x in (9000, 450, 7)] == [2000, 100, 2]
    ticks = time_ticks(NOW - 86400, NOW)
    assert 4 <= len(ticks) <= 9
    assert all(datetime.fromtimestamp(t).minute == 0 for t in ticks)  # whole local hours
    assert {round(b - a) for a, b in zip(ticks, ticks[1:])} == {10800}
    root = parse(render_svg(day(), [], NOW - 86400, NOW))
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert datetime.fromtimestamp(ticks[1]).strftime("%H:%M") in labels or any(
        datetime.fromtimestamp(ticks[1]).strftime("%d %b") in (x or "") for x in labels
    )
    assert "8000" in labels  # MB on the memory axis (free + 2 GiB peaks at 9 GiB)


def test_running_spans_follow_the_polls_before_the_first_edge() -> None:
    rows = [[NOW + i, NAN, NAN, NAN, NAN, NAN, float(i >= 10)] for i in range(0, 30, 5)]
    series = Series.from_rows(rows)
    assert running_spans(series, [], NOW, NOW + 40) == [(NOW + 10, NOW + 40)]
    stop = Mark(NOW + 20, "stopped", "ksmtuned", "", None)
    assert running_spans(series, [stop], NOW, NOW + 40) == [(NOW + 10, NOW + 20)]


def test_the_window_is_the_last_day_or_less() -> None:
    assert window(day(), MARKS, NOW, 86400) == (NOW - 86400, NOW)
    short = Series.from_rows([[NOW - 100, 1, 1, 1, 1, 1, 0]])
    assert window(short, [], NOW, 86400) == (NOW - 600, NOW)  # ten minutes at least


def test_series_json_round_trips_and_bad_answers_are_refused() -> None:
    s = day(threshold=NAN)
    doc = json.loads(json.dumps(s.to_json(), allow_nan=False))
    back = Series.from_json(doc)
    assert back.times == s.times
    assert all(math.isnan(v) for v in back.columns["ksmtuned_threshold_bytes"])
    good = ["time", *COLUMNS]
    for bad in (
        [],
        {"columns": ["time"], "points": []},
        {"columns": good, "points": {}},
        {"columns": good, "points": [[1, 2]]},
        {"columns": good, "points": [[None, 1, 1, 1, 1, 1, 1]]},
        {"columns": good, "points": [["1", 1, 1, 1, 1, 1, 1]]},
        {"columns": good, "points": [[1, True, 1, 1, 1, 1, 1]]},
        {"columns": good, "points": [[1, 1e300, 1, 1, 1, 1, 1]]},
        {"columns": good, "points": [[0, 0, 0, 0, 0, 0, 0]] * 20001},
    ):
        with pytest.raises(BadSeries):
            Series.from_json(bad)
