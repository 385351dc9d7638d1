"""The monitoring mixin (mixin/, jsonnet) is the one source of the Prometheus rules, the
Grafana dashboard and the PrometheusRule: the committed files are a fresh render, the
sources are jsonnetfmt-clean and vendorable as a subtree, a user's _config (jsonnet) or
configuration file (the packaged renderer) reaches every alert, recording rule and
dashboard query, every alert is unit-tested with promtool (rules/tests/*.yml), routable
(severity, summary, description, absolute runbook_url whose anchor exists in
docs/runbook.md) and scoped by the configured selector."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ksm_exporter.collectors.per_vm import METRICS as per_vm_metrics
from ksm_exporter.flags import experiment, serve, status, transitions, watch
from tests.support import REPO
from tests.support.dashboard_queries import all_queries, families
from tests.support.scripts import (
    DASHBOARD_FILE,
    HAVE_PROMTOOL,
    JSONNET,
    MIXIN,
    NO_PROMTOOL,
    PROMETHEUS_RULE_FILE,
    PROMTOOL,
    RENDERED,
    RULES_FILE,
    default_config,
    jsonnet,
    needs_jsonnet,
    render_mixin,
    run_render,
)

UNIT_TESTS = sorted((REPO / "rules/tests").glob("*.yml"))
RUNBOOK = REPO / "docs/runbook.md"
JSONNETFMT = shutil.which("jsonnetfmt") or "/usr/bin/jsonnetfmt"
SOURCES = sorted(MIXIN.rglob("*.libsonnet"))
needs_promtool = pytest.mark.skipif(not HAVE_PROMTOOL, reason=NO_PROMTOOL)
pytestmark = needs_jsonnet

# A user's configuration touching every kind of knob. Not job="ksm-exporter": shows that
# no expression hard-codes the default.
OTHER_SELECTOR = 'job="kvm-nodes", env=~"prod|staging"'
OTHER = {
    "ksmSelector": OTHER_SELECTOR,
    "ksmClusterLabel": "region",
    "ksmRunbookURLPattern": "https://wiki.example.org/ksm#%s",
    "ksmSeverities": {"KsmFlapping": "critical", "KsmSysfsMissing": "warning"},
    "ksmFlappingThreshold": 7,
    "ksmFlappingWindow": "3h",
    "ksmPressureAvailableRatio": 0.1,
    "ksmWastingRatio": 25,
    "ksmdCpuBudgetCores": 2,
    "ksmVmNegativeProfitBytes": 128 * 2**20,
    "ksmDashboardUID": "kvm-ksm",
}


def rule_list(rules_yaml: str) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(rules_yaml)["groups"] for r in g["rules"]]


def alerts(rules_yaml: str = "") -> list[dict[str, Any]]:
    text = rules_yaml or (REPO / RULES_FILE).read_text()
    return [r for r in rule_list(text) if "alert" in r]


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings."""
    return {
        re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        for title in re.findall(r"^#+ (.+)$", markdown, re.M)
    }


def selects_with(expr: str, selector: str) -> list[str]:
    """The metric names in expr not followed by a selector holding `selector`."""
    missing = []
    for name in families(expr):
        for found in re.finditer(rf"(?<![\w:]){re.escape(name)}(\{{[^}}]*\}})?", expr):
            if not (found[1] and selector in found[1]):
                missing.append(name)
    return missing


def test_committed_files_are_a_fresh_render(tmp_path: Path) -> None:
    for rel, text in render_mixin(tmp_path / "out").items():
        assert (REPO / rel).read_text() == text, f"{rel} is stale: run make mixin"


def test_sources_are_jsonnetfmt_clean() -> None:
    if not Path(JSONNETFMT).is_file():
        pytest.skip("jsonnetfmt not installed (Debian package jsonnet)")
    assert len(SOURCES) >= 8
    result = subprocess.run(
        [JSONNETFMT, "--test", *map(str, SOURCES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"not formatted (make fmt): {result.stdout}{result.stderr}"


def test_mixin_is_vendorable_as_a_subtree(tmp_path: Path) -> None:
    """jsonnet-bundler vendors mixin/ alone: evaluated from vendor/ with -J vendor, as
    its users do, it resolves every import and gives the committed files' content."""
    vendor = tmp_path / "vendor"
    shutil.copytree(MIXIN, vendor / "mixin")
    assert {p.suffix for p in MIXIN.rglob("*") if p.is_file()} == {".libsonnet", ""}
    (tmp_path / "mine.jsonnet").write_text(
        "local ksm = import 'mixin/mixin.libsonnet';\n"
        "{ rules: ksm.prometheusRules, alerts: ksm.prometheusAlerts,"
        " dashboards: ksm.grafanaDashboards }\n"
    )
    result = subprocess.run(
        [JSONNET, "-J", str(vendor), str(tmp_path / "mine.jsonnet")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    mixin = json.loads(result.stdout)
    committed = yaml.safe_load((REPO / RULES_FILE).read_text())["groups"]
    assert mixin["rules"]["groups"] + mixin["alerts"]["groups"] == committed
    assert all("record" in r for g in mixin["rules"]["groups"] for r in g["rules"])
    # Every alert is in prometheusAlerts, after the records its group holds for it.
    kinds = [
        ["alert" if "alert" in r else "record" for r in g["rules"]]
        for g in mixin["alerts"]["groups"]
    ]
    assert all(k == sorted(k, reverse=True) for k in kinds)
    assert sum(k.count("alert") for k in kinds) == 9
    dashboard = json.loads((REPO / DASHBOARD_FILE).read_text())
    assert mixin["dashboards"] == {"ksm-exporter.json": dashboard}


def test_prometheusrule_holds_the_rule_files_groups() -> None:
    rule = yaml.safe_load((REPO / PROMETHEUS_RULE_FILE).read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load((REPO / RULES_FILE).read_text())["groups"]


def test_no_group_reads_the_fleets_largest_sets_twice() -> None:
    """A group's evaluation is one goroutine, the rules in order: a group that read the
    per-VM series (20 a node) or the transition counters (9 a node) twice took over a
    second at 5,000 nodes (docs/performance.md). Each such read is its own group's."""
    per_vm = {name for _, name, _ in per_vm_metrics}
    groups = {g["name"]: g for g in yaml.safe_load((REPO / RULES_FILE).read_text())["groups"]}
    for name, group in groups.items():
        exprs = [r["expr"] for r in group["rules"]]
        read = [m for e in exprs for m in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e)]
        assert sum(m in per_vm for m in read) <= 1, name
        assert read.count("ksm_run_transitions_total") <= 1, name
    assert "ksm_process_merging_pages" in groups["ksm-exporter.vms"]["rules"][0]["expr"]
    assert "ksm_process_profit_bytes" in groups["ksm-exporter.vm-profit"]["rules"][0]["expr"]


def test_alerts_are_routable_and_linked_to_their_runbook() -> None:
    severities = default_config()["ksmSeverities"]
    anchors = github_anchors(RUNBOOK.read_text())
    assert sorted(a["alert"] for a in alerts()) == sorted(severities)
    for a in alerts():
        name, notes = a["alert"], a["annotations"]
        assert a["labels"] == {"severity": severities[name]}, name
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in notes["summary"], name  # fixed: one summary per alert
        assert "$labels.instance" in notes["description"], name
        assert "$value" in notes["description"], name
        url = notes["runbook_url"]
        base = "https://github.com/ksm-exporter/ksm-exporter/blob/main/docs/runbook.md#"
        assert url == base + name.lower(), name
        assert url.split("#", 1)[1] in anchors, f"no runbook section for {name}"
    assert severities["KsmSysfsMissing"] == "info"


def as_jsonnet_override(config: dict[str, Any]) -> str:
    """The configuration as a jsonnet user writes it: `_config+::`, severities merged
    with `+:` (a plain `:` would drop the other alerts' severities)."""
    rest = {k: v for k, v in config.items() if k != "ksmSeverities"}
    severities = json.dumps(config.get("ksmSeverities", {}))
    return f"{{ _config+:: {json.dumps(rest)} + {{ ksmSeverities+: {severities} }} }}"


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """OTHER rendered by the renderer the packages ship (mixin/render --config)."""
    return render_mixin(tmp_path_factory.mktemp("other") / "out", OTHER)


def test_jsonnet_override_and_renderer_configuration_agree(other: dict[str, str]) -> None:
    override = as_jsonnet_override(OTHER)
    mixin = jsonnet(
        "-e",
        f"local m = (import 'mixin.libsonnet') + {override}; {{ rules: m.prometheusRules,"
        " alerts: m.prometheusAlerts, dashboards: m.grafanaDashboards }",
    )
    groups = mixin["rules"]["groups"] + mixin["alerts"]["groups"]
    assert groups == yaml.safe_load(other[RULES_FILE])["groups"]
    assert mixin["dashboards"]["ksm-exporter.json"] == json.loads(other[DASHBOARD_FILE])


def test_override_reaches_every_rule_and_dashboard_query(other: dict[str, str]) -> None:
    rules = rule_list(other[RULES_FILE])
    dashboard = json.loads(other[DASHBOARD_FILE])
    for text in other.values():
        assert 'job="ksm-exporter"' not in text and 'job=\\"ksm-exporter\\"' not in text
        assert "cell" not in text and "runbook.md" not in text
    for r in rules:
        where = r.get("alert") or r["record"]
        assert selects_with(r["expr"], OTHER_SELECTOR) == [], where
    (saved,) = (r for r in rules if r.get("record") == "job:ksm_saved_bytes:sum")
    # The fleet aggregations keep the selector's labels, which the dashboard matches.
    assert saved["expr"].startswith("sum by (job, region, env) (")
    queries = all_queries(dashboard)
    assert len(queries) > 60
    for q in queries:
        assert selects_with(q.expr, OTHER_SELECTOR + ', job=~"$job", region=~"$region"') == [], (
            q.where
        )
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert variables == ["datasource", "job", "region", "instance"]
    for v in dashboard["templating"]["list"][1:]:
        assert OTHER_SELECTOR in v["query"], v["name"]
    assert dashboard["uid"] == "kvm-ksm" and "/d/kvm-ksm/" in json.dumps(dashboard)

    by_name = {a["alert"]: a for a in alerts(other[RULES_FILE])}
    defaults = default_config()["ksmSeverities"]
    for name, a in by_name.items():
        expected = OTHER["ksmSeverities"].get(name, defaults[name])
        assert a["labels"] == {"severity": expected}, name
        assert a["annotations"]["runbook_url"] == f"https://wiki.example.org/ksm#{name.lower()}"
    flapping = by_name["KsmFlapping"]
    assert flapping["expr"].endswith("> 7\n")
    records = {r["record"]: r["expr"] for r in rules if "record" in r}
    assert "[3h]" in records["instance:ksm_run_transitions:increase_flapping_window"]
    assert "in 3h (alert above 7)" in flapping["annotations"]["description"]
    # The description's queries pick the alert's node by its instance alone (the
    # selector's job matcher would make each one, run per alert and evaluation, 4x dearer).
    losing_vms = by_name["KsmVmNegativeProfit"]["annotations"]["description"]
    assert "transitions:sum{instance=%q}[3h]" in flapping["annotations"]["description"]
    assert "ksm_process_profit_bytes{instance=%q}" in losing_vms
    assert "< 0.1\n" in by_name["KsmStoppedUnderMemoryPressure"]["expr"]
    assert "> 25 * ksm_pages_sharing" in by_name["KsmWastingEffort"]["expr"]
    assert by_name["KsmdCpuOverBudget"]["expr"].endswith("> 2\n")
    losing = records["instance:ksm_process_profit_bytes:count_below_threshold"]
    assert losing.endswith("< -134217728)\n")
    assert "-128 MiB" in by_name["KsmVmNegativeProfit"]["annotations"]["description"]
    rule = yaml.safe_load(other[PROMETHEUS_RULE_FILE])
    assert rule["spec"]["groups"] == yaml.safe_load(other[RULES_FILE])["groups"]


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"ksmFlappingTreshold": 3}, "unknown configuration keys: ksmFlappingTreshold"),
        ({"ksmSeverities": {"KsmFlapping": "page"}}, "not KsmFlapping: page"),
        ({"ksmSeverities": {"KsmFlap": "info"}}, "not KsmFlap: info"),
        ({"ksmRunbookURLPattern": "docs/runbook.md#%s"}, "ksmRunbookURLPattern"),
        ({"ksmFlappingWindow": "an hour"}, "not a Prometheus duration: ksmFlappingWindow"),
    ],
)
def test_bad_configuration_is_one_clear_line_and_nothing_written(
    tmp_path: Path, config: dict[str, Any], error: str
) -> None:
    result = run_render(tmp_path / "out", config)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and error in result.stderr, result.stderr
    assert result.stderr.startswith("render: ksm-exporter mixin: ")
    assert not (tmp_path / "out").exists()


def test_zero_thresholds_render(tmp_path: Path) -> None:
    """0 is a threshold too (jsonnet's %g overflows on it)."""
    zeros = ("ksmVmNegativeProfitBytes", "ksmWastingRatio", "ksmdCpuBudgetCores")
    rendered = render_mixin(tmp_path / "out", {k: 0 for k in zeros})
    by_name = {a["alert"]: a for a in alerts(rendered[RULES_FILE])}
    records = {r["record"]: r["expr"] for r in rule_list(rendered[RULES_FILE]) if "record" in r}
    assert records["instance:ksm_process_profit_bytes:count_below_threshold"].endswith("< -0)\n")
    assert "below -0 MiB" in by_name["KsmVmNegativeProfit"]["annotations"]["description"]
    assert by_name["KsmdCpuOverBudget"]["expr"].endswith("> 0\n")


def test_a_typo_in_a_jsonnet_override_fails_too() -> None:
    result = subprocess.run(
        [
            JSONNET,
            "-J",
            str(MIXIN),
            "-e",
            "(import 'mixin.libsonnet') + { _config+:: { ksmSelectr: 'job=\"x\"',"
            " otherMixinsKey: 1 } }",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Keys of other mixins sharing _config are theirs; a ksm-prefixed unknown is a typo.
    assert result.returncode != 0
    assert "unknown _config keys: ksmSelectr" in result.stderr.splitlines()[0]


def test_every_alert_is_expected_to_fire_in_a_unit_test() -> None:
    firing = set()
    for path in UNIT_TESTS:
        firing |= set(
            re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels:", path.read_text())
        )
    assert firing == {a["alert"] for a in alerts()}


@needs_promtool
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", RULES_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 31 rules found" in result.stdout


@needs_promtool
@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests(unit_test: Path) -> None:
    result = promtool("test", "rules", unit_test.name, cwd=unit_test.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# With the flapping knobs turned down (more than 2 changes in 10 minutes, held 2
# minutes, no keep_firing_for), three quick changes fire and resolve once they leave the
# window, while the committed default (more than 4 in 1h) would stay quiet.
OVERRIDE_TEST = """
rule_files: [rules/ksm-exporter.rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'ksm_run_transitions_total{job="kvm", instance="n:9941", state="running"}'
        values: '0 1 1 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2'
      - series: 'ksm_run_transitions_total{job="kvm", instance="n:9941", state="stopped"}'
        values: '0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 4m
        alertname: KsmFlapping
        exp_alerts: []
      - eval_time: 5m
        alertname: KsmFlapping
        exp_alerts:
          - exp_labels: {severity: critical, job: kvm, instance: "n:9941"}
            exp_annotations:
              summary: KSM keeps starting and stopping.
              description: >-
                KSM on n:9941 changed state 3 times in 10m (alert above 2). Cause of most
                changes: not reported by this exporter.
              runbook_url: https://wiki.example.org/ksm/runbook#ksmflapping
      - eval_time: 13m
        alertname: KsmFlapping
        exp_alerts: []
"""


@needs_promtool
def test_operator_configuration_renders_rules_that_fire_as_configured(tmp_path: Path) -> None:
    config = {
        "ksmSelector": 'job="kvm"',
        "ksmFlappingThreshold": 2,
        "ksmFlappingWindow": "10m",
        "ksmFlappingFor": "2m",
        "ksmFlappingKeepFiringFor": "0s",
        "ksmSeverities": {"KsmFlapping": "critical"},
        "ksmRunbookURLPattern": "https://wiki.example.org/ksm/runbook#%s",
    }
    render_mixin(tmp_path, config)
    (tmp_path / "override_test.yml").write_text(OVERRIDE_TEST)
    result = promtool("test", "rules", "override_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_example_prometheus_config_with_its_rules_and_file_sd_targets() -> None:
    """promtool reads the rule file and every file_sd file the example points at; its
    job is what the default selector picks."""
    result = promtool("check", "config", "examples/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 31 rules found" in result.stdout
    assert sorted(p.name for p in (REPO / "examples/targets").glob("ksm-*.json")) == [
        "ksm-rack-a.json",
        "ksm-rack-b.json",
    ]
    example = yaml.safe_load((REPO / "examples/prometheus.yml").read_text())
    (job,) = (j["job_name"] for j in example["scrape_configs"])
    assert default_config()["ksmSelector"] == f'job="{job}"'


def test_example_configuration_and_documented_keys(tmp_path: Path) -> None:
    result = run_render(
        tmp_path / "out", json.loads((REPO / "examples/ksm-config.json").read_text())
    )
    assert result.returncode == 0, result.stderr
    by_name = {a["alert"]: a for a in alerts((tmp_path / "out" / RULES_FILE).read_text())}
    assert by_name["KsmFlapping"]["expr"].endswith("> 6\n")
    assert by_name["KsmFlapping"]["labels"]["severity"] == "critical"
    assert by_name["KsmSysfsMissing"]["labels"]["severity"] == "info"  # defaults fill the rest
    doc = (REPO / "docs/dashboard-and-alerts.md").read_text()
    for name in default_config():
        assert f"`{name}`" in doc, f"configuration key {name} is not documented"
    assert set(RENDERED) <= {rel for rel in RENDERED if rel in doc}


def test_user_facing_texts_name_the_report_not_a_seed() -> None:
    texts = [
        "README.md",
        "ARCHITECTURE.md",
        "CHANGELOG.md",
        # What apt show and rpm -qi print.
        "packaging/debian/control",
        "packaging/debian/changelog",
        "packaging/rpm/ksm-exporter.spec",
        *RENDERED,
        *(str(p.relative_to(REPO)) for p in sorted((REPO / "docs").rglob("*.md"))),
        # Every HELP text the exporter serves, on each fixture kernel.
        *(str(p.relative_to(REPO)) for p in sorted((REPO / "tests/golden").glob("*.metrics"))),
    ]
    for rel in texts:
        assert "seed" not in (REPO / rel).read_text().lower(), rel
    for command in (serve, status, watch, transitions, experiment):  # every command's --help
        assert "seed" not in command.parser().format_help().lower(), command.__name__
    background = (REPO / "docs/background.md").read_text()
    assert "checkKSM_pages_info.sh" in background and "checkKSM_start_time.sh" in background
