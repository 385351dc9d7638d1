"""The Prometheus rules: in sync with their generator, valid for promtool, every alert
unit-tested (rules/tests/*.yml) and documented with a runbook."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .scripts import HAVE_PROMTOOL, NO_PROMTOOL, PROMTOOL, load_script
from .support import REPO

gen = load_script("rules/generate_rules.py")
UNIT_TESTS = sorted((REPO / "rules/tests").glob("*.yml"))
DOC = REPO / "docs/dashboard-and-alerts.md"
needs_promtool = pytest.mark.skipif(not HAVE_PROMTOOL, reason=NO_PROMTOOL)


def alerts() -> list[dict[str, Any]]:
    groups = gen.build_rules(gen.Params())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_committed_rules_are_the_generator_output() -> None:
    assert gen.RULES_FILE.read_text() == gen.render(gen.Params()), (
        "rules/ksm-exporter.rules.yml is stale: run python3 rules/generate_rules.py "
        "-o rules/ksm-exporter.rules.yml"
    )


def test_alerts_carry_severity_summary_description_and_a_runbook_section() -> None:
    headings = set(re.findall(r"^### (\w+)$", DOC.read_text(), re.M))
    names = [a["alert"] for a in alerts()]
    assert sorted(names) == sorted(
        [
            "KsmFlapping",
            "KsmStoppedUnderMemoryPressure",
            "KsmSysfsMissing",
            "KsmExporterDown",
            "KsmWastingEffort",
            "KsmNegativeGeneralProfit",
            "KsmVmNegativeProfit",
        ]
    )
    for a in alerts():
        assert a["labels"]["severity"] in ("critical", "warning", "info"), a
        assert a["annotations"]["summary"] and a["annotations"]["description"], a
        assert a["annotations"]["runbook"] == f"{gen.RUNBOOK}#{a['alert'].lower()}"
        assert a["alert"] in headings, f"no '### {a['alert']}' runbook section in {DOC}"


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
    assert "SUCCESS: 10 rules found" in result.stdout


@needs_promtool
@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests(unit_test: Path) -> None:
    result = promtool("test", "rules", unit_test.name, cwd=unit_test.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# With the flapping knobs turned down (3 changes in 10 minutes, held 2 minutes), three
# quick changes fire, while the committed default (more than 4 in 1h) would stay quiet.
OVERRIDE_TEST = """
rule_files: [override.rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'ksm_run_transitions_total{job="ksm", instance="n:9941", state="running"}'
        values: '0 1 1 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2'
      - series: 'ksm_run_transitions_total{job="ksm", instance="n:9941", state="stopped"}'
        values: '0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 4m
        alertname: KsmFlapping
        exp_alerts: []
      - eval_time: 5m
        alertname: KsmFlapping
        exp_alerts:
          - exp_labels: {severity: warning, job: ksm, instance: "n:9941"}
            exp_annotations:
              summary: KSM on n:9941 changed state 3 times in 10m
              description: >-
                The KSM run state changed 3 times within 10m (threshold 2). Each stop
                leaves merged pages to be broken up on write and each start rescans from
                scratch, so KSM pays its CPU cost without keeping its savings. Usually
                ksmtuned with free memory sitting on its threshold.
              runbook: docs/dashboard-and-alerts.md#ksmflapping
      - eval_time: 13m
        alertname: KsmFlapping
        exp_alerts: []
"""


@needs_promtool
def test_generator_options_override_the_flapping_threshold_window_and_duration(
    tmp_path: Path,
) -> None:
    assert (
        gen.main(
            [
                "--flapping-threshold=2",
                "--flapping-window=10m",
                "--flapping-for=2m",
                f"--output={tmp_path / 'override.rules.yml'}",
            ]
        )
        == 0
    )
    (tmp_path / "override_test.yml").write_text(OVERRIDE_TEST)
    result = promtool("test", "rules", "override_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_example_prometheus_config_with_its_rules_and_file_sd_targets() -> None:
    """promtool reads the rule file and every file_sd file the example points at."""
    result = promtool("check", "config", "examples/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout
    assert sorted(p.name for p in (REPO / "examples/targets").glob("ksm-*.json")) == [
        "ksm-rack-a.json",
        "ksm-rack-b.json",
    ]
