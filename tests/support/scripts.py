"""The tools outside the package that the rules and dashboard tests drive: promtool, and
the monitoring mixin's renderer (mixin/render, which the packages ship too) on jsonnet."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.support import REPO

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
HAVE_PROMTOOL = Path(PROMTOOL).is_file()
NO_PROMTOOL = "promtool not installed (Debian package prometheus)"
JSONNET = shutil.which("jsonnet") or "/usr/bin/jsonnet"
HAVE_JSONNET = Path(JSONNET).is_file()
NO_JSONNET = "jsonnet not installed (Debian package jsonnet)"
needs_jsonnet = pytest.mark.skipif(not HAVE_JSONNET, reason=NO_JSONNET)

MIXIN = REPO / "mixin"
RENDER = MIXIN / "render"
# What the renderer writes, relative to its output directory (and to the repository).
RULES_FILE = "rules/ksm-exporter.rules.yml"
DASHBOARD_FILE = "grafana/ksm-exporter.json"
PROMETHEUS_RULE_FILE = "deploy/kubernetes/prometheusrule.yaml"
RENDERED = (RULES_FILE, DASHBOARD_FILE, PROMETHEUS_RULE_FILE)


def run_render(
    out: Path, config: Optional[dict[str, Any]] = None, render: Path = RENDER
) -> subprocess.CompletedProcess[str]:
    """`render [--config FILE] OUT` with `config` written as JSON beside OUT."""
    args = [str(render)]
    if config is not None:
        path = out.parent / f"{out.name}-config.json"
        path.write_text(json.dumps(config))
        args.append(f"--config={path}")
    return subprocess.run(
        [*args, str(out)], capture_output=True, text=True, timeout=120, check=False
    )


def render_mixin(out: Path, config: Optional[dict[str, Any]] = None) -> dict[str, str]:
    """The rendered files' texts by path, for `config` (the _config keys to change)."""
    result = run_render(out, config)
    assert result.returncode == 0, result.stderr
    return {rel: (out / rel).read_text() for rel in RENDERED}


def jsonnet(*args: str) -> Any:
    """jsonnet's JSON output, with mixin/ on the import path."""
    result = subprocess.run(
        [JSONNET, "-J", str(MIXIN), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def default_config() -> dict[str, Any]:
    """The mixin's _config as config.libsonnet sets it."""
    config: dict[str, Any] = jsonnet("-e", "(import 'config.libsonnet')._config")
    return config
