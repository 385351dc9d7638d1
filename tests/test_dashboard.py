"""The Grafana dashboard: in sync with its generator, importable (no data source UIDs),
a unit on every panel, filtered by the job and instance variables, and every query valid
PromQL over metrics that the contract or the recording rules define."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .dashboard_queries import (
    DASHBOARD,
    all_queries,
    families,
    fill,
    load_dashboard,
    panel_queries,
)
from .scripts import HAVE_PROMTOOL, NO_PROMTOOL, PROMTOOL, load_script
from .support import REPO

gen = load_script("grafana/generate_dashboard.py")
rules = load_script("rules/generate_rules.py")
DASH = load_dashboard()
PANELS = [p for p in DASH["panels"] if p["type"] != "row"]
UNITS = {
    "bytes",
    "suffix:x",
    "count:pages",
    "count:pages/s",
    "s",
    "percentunit",
    "cpm",
    "short",
    "bool_yes_no",
    "dateTimeAsIso",
}


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def test_committed_json_is_the_generator_output() -> None:
    assert DASHBOARD.read_text() == gen.render(), (
        "grafana/ksm-exporter.json is stale: run "
        "python3 grafana/generate_dashboard.py -o grafana/ksm-exporter.json"
    )


def test_no_hard_coded_data_source() -> None:
    builtin = {"type": "grafana", "uid": "-- Grafana --"}
    for d in walk(DASH):
        if "datasource" in d:
            assert d["datasource"] in ({"type": "prometheus", "uid": "${datasource}"}, builtin)
    assert "__inputs" not in DASH
    assert "DS_" not in DASHBOARD.read_text()
    assert DASH.get("id") is None


def test_variables_for_data_source_job_and_instance() -> None:
    variables = {v["name"]: v for v in DASH["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        v = variables[name]
        assert v["multi"] and v["includeAll"], name
        assert v["datasource"]["uid"] == "${datasource}"
    assert variables["job"]["query"] == "label_values(ksm_up, job)"
    assert variables["instance"]["query"] == 'label_values(ksm_up{job=~"$job"}, instance)'


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: p["title"])
def test_every_panel_has_a_unit(panel: dict[str, Any]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    if defaults["unit"] == "none":
        # Only state panels, whose every value is mapped to a name.
        assert panel["type"] == "state-timeline" and defaults["mappings"], panel["title"]
    else:
        assert defaults["unit"] in UNITS, panel["title"]
    for override in panel["fieldConfig"]["overrides"]:
        units = [p["value"] for p in override["properties"] if p["id"] == "unit"]
        assert set(units) <= UNITS, panel["title"]


def test_node_rows_follow_job_and_instance_and_fleet_rows_job_only() -> None:
    queries = panel_queries(DASH)
    assert {q.row.split(" (")[0] for q in queries} == {
        "Fleet",
        "Node: savings",
        "Node: scanning",
        "Node: run state",
        "Per VM",
        "Cost",
        "ksmtuned",
    }
    for q in all_queries(DASH):
        selectors = re.findall(r"\{[^}]*\}", q.expr)
        assert selectors, q.where
        for s in selectors:
            assert 'job=~"$job"' in s, q.where
            assert ('instance=~"$instance"' in s) == (q.row != "Fleet ($job)"), q.where


def test_queries_use_only_contract_metrics_and_recording_rules() -> None:
    contract = (REPO / "docs/CONTRACT.md").read_text()
    recorded = {
        r["record"]
        for g in rules.build_rules(rules.Params())["groups"]
        for r in g["rules"]
        if "record" in r
    }
    for q in all_queries(DASH):
        for name in families(q.expr):
            assert name in recorded or re.search(rf"\b{name}\b", contract), (q.where, name)


def test_panels_tile_the_grid_without_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for p in DASH["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, p["title"]
        taken |= cells
    assert len({p["id"] for p in DASH["panels"]}) == len(DASH["panels"])


def test_thresholds_shown_are_the_rules_defaults() -> None:
    params = rules.Params()
    by_title = {p["title"]: p for p in PANELS}
    flaps = by_title[f"Run-state changes in {params.flapping_window}"]
    steps = flaps["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == params.flapping_threshold + 1
    # The pressure table is the alert's expression with the job filter added.
    pressure = by_title["Nodes where KSM is stopped under memory pressure"]
    (alert,) = (
        r
        for g in rules.build_rules(params)["groups"]
        for r in g["rules"]
        if r.get("alert") == "KsmStoppedUnderMemoryPressure"
    )
    table_expr = pressure["targets"][0]["expr"]
    assert f"< {params.pressure_available_ratio})" in table_expr
    unfiltered = table_expr.replace('job=~"$job", ', "").replace('{job=~"$job"}', "")
    assert unfiltered == alert["expr"]


@pytest.mark.skipif(not HAVE_PROMTOOL, reason=NO_PROMTOOL)
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (variables filled in) as a recording rule."""
    queries = all_queries(DASH)
    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"dashboard:query_{i}", "expr": fill(q.expr, ["ksm"], ["a:9941", "b:9941"])}
            for i, q in enumerate(queries)
        ],
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [group]}))  # JSON is YAML
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout
