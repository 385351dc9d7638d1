"""The Prometheus rules and the monitoring mixin: generated from one configuration, in
sync with the committed files, valid for promtool, every alert unit-tested
(rules/tests/*.yml), routable (severity, summary, description, absolute runbook_url whose
anchor exists in docs/runbook.md) and scoped by the configured selector."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ksm_exporter.flags import experiment, serve, status, transitions, watch
from tests.support import REPO
from tests.support.dashboard_queries import families
from tests.support.scripts import HAVE_PROMTOOL, NO_PROMTOOL, PROMTOOL, load_script

gen = load_script("rules/generate_rules.py")
mixin = load_script("mixin/generate.py")
UNIT_TESTS = sorted((REPO / "rules/tests").glob("*.yml"))
RUNBOOK = REPO / "docs/runbook.md"
JSONNET = shutil.which("jsonnet") or "/usr/bin/jsonnet"
needs_promtool = pytest.mark.skipif(not HAVE_PROMTOOL, reason=NO_PROMTOOL)
needs_jsonnet = pytest.mark.skipif(
    not Path(JSONNET).is_file(), reason="jsonnet not installed (Debian package jsonnet)"
)
# Not job="ksm": shows that no expression hard-codes the default.
OTHER_SELECTOR = 'job="kvm-nodes", env=~"prod|staging"'


def alerts(config: Any = None) -> list[dict[str, Any]]:
    groups = gen.build_rules(config or gen.Config())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


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


def test_committed_files_are_the_generator_output() -> None:
    for rel, text in mixin.outputs(gen.Config()).items():
        assert (REPO / rel).read_text() == text, f"{rel} is stale: run python3 mixin/generate.py"


def test_alerts_are_routable_and_linked_to_their_runbook() -> None:
    anchors = github_anchors(RUNBOOK.read_text())
    names = [a["alert"] for a in alerts()]
    assert sorted(names) == sorted(gen.DEFAULT_SEVERITIES)
    for a in alerts():
        name, notes = a["alert"], a["annotations"]
        assert a["labels"] == {"severity": gen.DEFAULT_SEVERITIES[name]}, name
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in notes["summary"], name  # fixed: one summary per alert
        assert "$labels.instance" in notes["description"], name
        assert "$value" in notes["description"], name
        url = notes["runbook_url"]
        assert url.startswith("https://") and url == gen.Config().runbook(name)
        assert url.split("#", 1)[1] in anchors, f"no runbook section for {name}"
    assert gen.DEFAULT_SEVERITIES["KsmSysfsMissing"] == "info"


def test_configuration_sets_selector_severity_and_runbook_in_every_rule() -> None:
    config = gen.Config.from_json(
        {
            "selector": OTHER_SELECTOR,
            "severities": {"KsmFlapping": "critical"},
            "runbook_url": "https://wiki.example.org/ksm#{anchor}",
            "flapping_window": "2h",
        }
    )
    rules = [r for g in gen.build_rules(config)["groups"] for r in g["rules"]]
    for r in rules:
        text = r["expr"] + json.dumps(r.get("annotations", {}))
        assert 'job="ksm"' not in text
        for name in families(r["expr"]):
            # Every metric read is followed by a selector holding the configured one.
            for found in re.finditer(rf"(?<![\w:]){re.escape(name)}(\{{[^}}]*\}})?", r["expr"]):
                assert found[1] and OTHER_SELECTOR in found[1], (r.get("alert"), name)
        if "alert" in r:
            assert r["annotations"]["runbook_url"].startswith("https://wiki.example.org/ksm#")
    flapping = next(r for r in rules if r.get("alert") == "KsmFlapping")
    assert flapping["labels"]["severity"] == "critical"
    assert "[2h]" in flapping["expr"] and "[2h]" in flapping["annotations"]["description"]
    assert next(r for r in rules if r.get("alert") == "KsmExporterDown")["labels"] == {
        "severity": "warning"
    }


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"flapping_treshold": 3}, "unknown configuration keys: flapping_treshold"),
        ({"flapping_threshold": "3"}, "flapping_threshold: expected int"),
        ({"severities": {"KsmFlapping": "page"}}, "severities.KsmFlapping"),
        ({"runbook_url": "docs/runbook.md#{anchor}"}, "runbook_url"),
        ({"flapping_window": "an hour"}, "flapping_window: not a Prometheus duration"),
    ],
)
def test_bad_configuration_is_one_clear_error(
    tmp_path: Path, data: dict[str, Any], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    assert mixin.main([f"--config={path}", f"--output-dir={tmp_path / 'out'}"]) == 2
    assert error in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_alert_is_expected_to_fire_in_a_unit_test() -> None:
    firing = set()
    for path in UNIT_TESTS:
        firing |= set(
            re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels:", path.read_text())
        )
    assert firing == {a["alert"] for a in alerts()}


@needs_promtool
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(gen.RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout


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
def test_operator_configuration_regenerates_the_rules(tmp_path: Path) -> None:
    config = tmp_path / "my-ksm.json"
    config.write_text(
        json.dumps(
            {
                "selector": 'job="kvm"',
                "flapping_threshold": 2,
                "flapping_window": "10m",
                "flapping_for": "2m",
                "flapping_keep_firing_for": "0s",
                "severities": {"KsmFlapping": "critical"},
                "runbook_url": "https://wiki.example.org/ksm/runbook#{anchor}",
            }
        )
    )
    assert mixin.main([f"--config={config}", f"--output-dir={tmp_path}"]) == 0
    (tmp_path / "override_test.yml").write_text(OVERRIDE_TEST)
    result = promtool("test", "rules", "override_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    dashboard = (tmp_path / "grafana/ksm-exporter.json").read_text()
    assert 'job=\\"kvm\\"' in dashboard and 'job=\\"ksm\\"' not in dashboard


def jsonnet(*args: str) -> Any:
    result = subprocess.run(
        [JSONNET, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def check_mixin(root: Path, config: Any) -> None:
    """The mixin at root/mixin evaluates to root's rules and dashboard and its config."""
    lib = str(root / "mixin/mixin.libsonnet")
    evaluated = jsonnet(lib)
    assert set(evaluated) == {"prometheusRules", "prometheusAlerts", "grafanaDashboards"}
    rules = yaml.safe_load((root / "rules/ksm-exporter.rules.yml").read_text())
    groups = evaluated["prometheusRules"]["groups"] + evaluated["prometheusAlerts"]["groups"]
    assert groups == rules["groups"]
    assert all("record" in r for g in evaluated["prometheusRules"]["groups"] for r in g["rules"])
    assert all("alert" in r for g in evaluated["prometheusAlerts"]["groups"] for r in g["rules"])
    dashboard = json.loads((root / "grafana/ksm-exporter.json").read_text())
    assert evaluated["grafanaDashboards"] == {"ksm-exporter.json": dashboard}
    assert jsonnet("-e", f"(import '{lib}')._config") == config.to_json()


@needs_jsonnet
def test_mixin_is_the_committed_rules_and_dashboard() -> None:
    check_mixin(REPO, gen.Config())


@needs_jsonnet
def test_mixin_generated_with_an_operator_configuration(tmp_path: Path) -> None:
    data = {"selector": 'job="kvm"', "cluster_label": "region", "ksmd_cpu_budget_cores": 1}
    (tmp_path / "c.json").write_text(json.dumps(data))
    assert mixin.main([f"--config={tmp_path / 'c.json'}", f"--output-dir={tmp_path}"]) == 0
    config = gen.Config.from_json(data)
    check_mixin(tmp_path, config)
    (alert,) = (a for a in alerts(config) if a["alert"] == "KsmdCpuOverBudget")
    assert alert["expr"].endswith("> 1\n")


@needs_promtool
def test_example_prometheus_config_with_its_rules_and_file_sd_targets() -> None:
    """promtool reads the rule file and every file_sd file the example points at."""
    result = promtool("check", "config", "examples/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout
    assert sorted(p.name for p in (REPO / "examples/targets").glob("ksm-*.json")) == [
        "ksm-rack-a.json",
        "ksm-rack-b.json",
    ]


def test_example_configuration_and_documented_keys() -> None:
    config = gen.Config.load(REPO / "examples/ksm-config.json")
    assert config.flapping_threshold == 6 and config.severities["KsmFlapping"] == "critical"
    assert config.severities["KsmSysfsMissing"] == "info"  # the defaults fill the rest
    doc = (REPO / "docs/dashboard-and-alerts.md").read_text()
    for name in gen.Config().to_json():
        assert f"`{name}`" in doc, f"configuration key {name} is not documented"


def test_user_facing_texts_name_the_report_not_a_seed() -> None:
    texts = [
        "README.md",
        # What apt show and rpm -qi print.
        "packaging/debian/control",
        "packaging/debian/changelog",
        "packaging/rpm/ksm-exporter.spec",
        "rules/ksm-exporter.rules.yml",
        "grafana/ksm-exporter.json",
        *(str(p.relative_to(REPO)) for p in sorted((REPO / "docs").glob("*.md"))),
        # Every HELP text the exporter serves, on each fixture kernel.
        *(str(p.relative_to(REPO)) for p in sorted((REPO / "tests/golden").glob("*.metrics"))),
    ]
    for rel in texts:
        assert "seed" not in (REPO / rel).read_text().lower(), rel
    for command in (serve, status, watch, transitions, experiment):  # every command's --help
        assert "seed" not in command.parser().format_help().lower(), command.__name__
    background = (REPO / "docs/background.md").read_text()
    assert "checkKSM_pages_info.sh" in background and "checkKSM_start_time.sh" in background
