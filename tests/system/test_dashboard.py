"""The Grafana dashboard, rendered from the mixin with the alerts' configuration:
importable (asks for a data source, no UIDs), loadable into Grafana's own typed model
(grafana-foundation-sdk) without losing a key or carrying an invalid enum value, coloured
per panel, filtered by the configured selector and the job, cluster and node variables,
its thresholds the alerts', and every query valid PromQL over metrics that the contract
or the recording rules define."""

from __future__ import annotations

import copy
import enum
import json
import re
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from tests.support import REPO
from tests.support.dashboard_queries import (
    DASHBOARD,
    all_queries,
    families,
    fill,
    load_dashboard,
    panel_queries,
)
from tests.support.scripts import (
    DASHBOARD_FILE,
    HAVE_PROMTOOL,
    NO_PROMTOOL,
    PROMTOOL,
    RULES_FILE,
    needs_jsonnet,
    render_mixin,
)

DASH = load_dashboard()
PANELS = [p for p in DASH["panels"] if p["type"] != "row"]
UNITS = {
    "bytes",
    "suffix:x",
    "count:pages",
    "count:pages/s",
    "s",
    "percentunit",
    "suffix: cores",
    "short",
    "bool_yes_no",
    "dateTimeAsIso",
}
# Metrics the dashboard reads that other branches add: the collector success metric
# (node_exporter's semantics) comes with the exporter's per-source collectors.
PENDING_METRICS = {"ksm_scrape_collector_success"}
SELECTOR = 'job="ksm-exporter"'
FLEET_ROWS = ("Fleet", "Exporter health")


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def by_title(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in dashboard["panels"] if p["type"] != "row"}


def test_no_hard_coded_data_source_and_import_asks_for_one() -> None:
    builtin = {"type": "grafana", "uid": "-- Grafana --"}
    for d in walk(DASH):
        if "datasource" in d:
            assert d["datasource"] in ({"type": "prometheus", "uid": "${datasource}"}, builtin)
    (ds_input,) = DASH["__inputs"]
    assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"
    # The import dialog's choice becomes the datasource variable's value, the only use.
    variable = DASH["templating"]["list"][0]
    assert variable["current"] == {"text": "${DS_PROMETHEUS}", "value": "${DS_PROMETHEUS}"}
    assert DASHBOARD.read_text().count("${DS_PROMETHEUS}") == 2
    assert DASH.get("id") is None


def test_variables_job_cluster_and_one_node() -> None:
    variables = {v["name"]: v for v in DASH["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "cell", "instance"]
    assert variables["datasource"]["type"] == "datasource"
    for name in ("job", "cell"):
        assert variables[name]["multi"] and variables[name]["includeAll"], name
        assert variables[name]["current"] == {"text": "All", "value": "$__all"}, name
    assert variables["cell"]["allValue"] == ".*"  # nodes without a cell label too
    # Node rows show one node: no multi-select, no All.
    assert not variables["instance"]["multi"] and not variables["instance"]["includeAll"]
    assert variables["job"]["query"] == f"label_values(ksm_up{{{SELECTOR}}}, job)"
    assert variables["cell"]["query"] == f'label_values(ksm_up{{{SELECTOR}, job=~"$job"}}, cell)'
    assert variables["instance"]["query"] == (
        f'label_values(ksm_up{{{SELECTOR}, job=~"$job", cell=~"$cell"}}, instance)'
    )


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: p["title"])
def test_every_panel_has_a_unit_and_chosen_colours(panel: dict[str, Any]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    if defaults["unit"] == "none":
        # Only state panels, whose every value is mapped to a name.
        assert panel["type"] == "state-timeline" and defaults["mappings"], panel["title"]
    else:
        assert defaults["unit"] in UNITS, panel["title"]
    for override in panel["fieldConfig"]["overrides"]:
        units = [p["value"] for p in override["properties"] if p["id"] == "unit"]
        assert set(units) <= UNITS, panel["title"]
    # Never Grafana's default of green, then red from 80.
    assert defaults["color"]["mode"] in ("fixed", "thresholds", "palette-classic")
    steps = defaults["thresholds"]["steps"]
    assert steps[0]["value"] is None
    assert {"color": "red", "value": 80} not in steps, panel["title"]
    if panel["type"] == "table":
        excluded = panel["transformations"][-1]["options"]["excludeByName"]
        assert excluded == {"Time": True, "__name__": True}, panel["title"]


def test_savings_are_good_news_and_a_loss_is_red() -> None:
    panels = by_title(DASH)
    for title in (
        "Saved across the fleet",
        "Fleet savings share of RAM",
        "KSM saved",
        "Savings share of RAM",
        "Top nodes by saved memory",
    ):
        assert panels[title]["fieldConfig"]["defaults"]["color"] == {
            "mode": "fixed",
            "fixedColor": "green",
        }, title
    profit = panels["Fleet general profit"]["fieldConfig"]["defaults"]
    assert profit["color"] == {"mode": "thresholds"}
    assert profit["thresholds"]["steps"] == [
        {"color": "red", "value": None},
        {"color": "green", "value": 0},
    ]
    node_profit = panels["General profit"]["fieldConfig"]["defaults"]
    assert node_profit["thresholds"]["steps"] == [
        {"color": "red", "value": None},
        {"color": "transparent", "value": 0},
    ]


def test_node_rows_follow_the_node_and_fleet_rows_aggregate() -> None:
    queries = panel_queries(DASH)
    assert {q.row.split(" (")[0] for q in queries} == {
        *FLEET_ROWS,
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
            assert s.startswith("{" + SELECTOR), q.where
            assert 'job=~"$job"' in s and 'cell=~"$cell"' in s, q.where
            fleet = q.row.startswith(FLEET_ROWS)
            assert ('instance=~"$instance"' in s) == (not fleet), q.where
    # Per-VM rankings rank within each node.
    for q in queries:
        if re.search(r"\b(topk|bottomk)\b", q.expr) and q.row.startswith("Per VM"):
            assert re.search(r"(topk|bottomk) by \(job, instance\) \(10,", q.expr), q.where


def test_queries_use_only_contract_metrics_and_recording_rules() -> None:
    contract = (REPO / "docs/CONTRACT.md").read_text()
    groups = yaml.safe_load((REPO / RULES_FILE).read_text())["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    for q in all_queries(DASH):
        for name in families(q.expr):
            known = name in recorded or name in PENDING_METRICS or name == "up"
            assert known or re.search(rf"\b{name}\b", contract), (q.where, name)


def test_panel_titles_are_unique() -> None:
    titles = [p["title"] for p in PANELS]
    assert len(titles) == len(set(titles))


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


@needs_jsonnet
def test_thresholds_drawn_are_the_configured_alert_thresholds(tmp_path: Path) -> None:
    config = {
        "ksmSelector": 'job="kvm"',
        "ksmClusterLabel": "region",
        "ksmFlappingThreshold": 7,
        "ksmFlappingWindow": "3h",
        "ksmPressureAvailableRatio": 0.1,
        "ksmWastingRatio": 25,
        "ksmdCpuBudgetCores": 2,
    }
    rendered = render_mixin(tmp_path, config)
    dash = json.loads(rendered[DASHBOARD_FILE])
    panels = by_title(dash)

    def line(title: str) -> list[Any]:
        steps = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        return [s["value"] for s in steps]

    assert line("Run-state changes in 3h") == [None, 8]  # fires above 7
    assert line("Available memory") == [None, 0.1]
    assert line("Unshared per sharing page") == [None, 25]
    assert line("ksmd CPU") == [None, 2]
    # The pressure table is the alert's expression with the variables' matchers added.
    (alert,) = (
        r
        for g in yaml.safe_load(rendered[RULES_FILE])["groups"]
        for r in g["rules"]
        if r.get("alert") == "KsmStoppedUnderMemoryPressure"
    )
    table_expr = panels["Nodes where KSM is stopped under memory pressure"]["targets"][0]["expr"]
    assert table_expr.replace(', job=~"$job", region=~"$region"', "") == alert["expr"]
    assert SELECTOR not in json.dumps(dash)
    assert [v["name"] for v in dash["templating"]["list"]] == [
        "datasource",
        "job",
        "region",
        "instance",
    ]


def test_free_memory_against_ksmtuned_threshold_with_edges_coloured_by_cause() -> None:
    panel = by_title(DASH)["ksmtuned: free memory and threshold"]
    assert [families(t["expr"]) for t in panel["targets"]] == [
        {"ksmtuned_free_bytes"},
        {"ksmtuned_threshold_bytes"},
        {"ksm_memory_free_bytes"},
    ]
    edges = {
        a["name"]: (a["iconColor"], re.search(r'cause="(\w*)"', a["expr"])[1])  # type: ignore[index]
        for a in DASH["annotations"]["list"]
        if "expr" in a
    }
    assert edges == {
        "KSM run-state changes: ksmtuned": ("blue", "ksmtuned"),
        "KSM run-state changes: another controller": ("red", "other"),
        "KSM run-state changes: cause unknown": ("purple", "unknown"),
        "KSM run-state changes: cause not reported": ("orange", ""),
    }


# Keys Grafana's import format or Prometheus data source reads that the dashboard model
# does not carry: the import envelope, and the legacy Prometheus annotation fields
# (Grafana's Prometheus data source takes an annotation's title, text and tags from them).
OUTSIDE_THE_MODEL = re.compile(
    r"^/(__inputs|__requires|annotations/list\[\d+\]/(step|titleFormat|textFormat|tagKeys))$"
)


def dropped_keys(before: Any, after: Any, path: str = "") -> list[str]:
    if isinstance(before, dict):
        assert isinstance(after, dict), path
        out = []
        for k, v in before.items():
            if k in after:
                out += dropped_keys(v, after[k], f"{path}/{k}")
            else:
                out.append(f"{path}/{k}")
        return out
    if isinstance(before, list):
        assert isinstance(after, list) and len(after) == len(before), path
        return [
            d
            for i, (b, a) in enumerate(zip(before, after))
            for d in dropped_keys(b, a, f"{path}[{i}]")
        ]
    assert before == after, path
    return []


def bad_enum_values(model: Any, path: str = "") -> list[str]:
    """Fields of the typed model whose type is an enum but whose value is not one of its
    members (from_json keeps whatever the JSON said)."""
    if isinstance(model, list):
        return [b for i, m in enumerate(model) for b in bad_enum_values(m, f"{path}[{i}]")]
    if isinstance(model, dict):
        return [b for k, m in model.items() for b in bad_enum_values(m, f"{path}/{k}")]
    if not hasattr(model, "to_json"):
        return []
    out = []
    hints = typing.get_type_hints(type(model))
    for name, value in vars(model).items():
        hint = hints.get(name)
        enums = [
            t
            for t in (typing.get_args(hint) or (hint,))
            if isinstance(t, type) and issubclass(t, enum.Enum)
        ]
        if value is not None and enums and not any(value in {m.value for m in e} for e in enums):
            out.append(f"{path}/{name}={value!r}")
        out += bad_enum_values(value, f"{path}/{name}")
    return out


def test_round_trip_through_grafanas_dashboard_model() -> None:
    register_default_plugins()
    model = Dashboard.from_json(copy.deepcopy(DASH))
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    dropped = dropped_keys(DASH, again)
    assert [d for d in dropped if not OUTSIDE_THE_MODEL.match(d)] == []
    assert bad_enum_values(model) == []
    # The checks see a wrong value and a key the model does not know.
    broken = copy.deepcopy(DASH)
    broken["panels"][1]["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut"
    broken["panels"][1]["options"]["colourMode"] = "value"
    model = Dashboard.from_json(broken)
    assert bad_enum_values(model) == ["/panels[1]/field_config/defaults/thresholds/mode='absolut'"]
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    assert dropped_keys(broken, again).count("/panels[1]/options/colourMode") == 1


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
