"""The PromQL of the committed Grafana dashboard, as Grafana would send it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tests.support import REPO

DASHBOARD = REPO / "grafana/ksm-exporter.json"


@dataclass(frozen=True)
class Query:
    where: str  # "row / panel / refId", or "annotation / name"
    row: str
    expr: str


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_queries(dashboard: dict[str, Any]) -> list[Query]:
    out: list[Query] = []
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        for t in panel["targets"]:
            out.append(Query(f"{row} / {panel['title']} / {t['refId']}", row, t["expr"]))
    return out


def annotation_queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(f"annotation / {a['name']}", "", a["expr"])
        for a in dashboard["annotations"]["list"]
        if "expr" in a
    ]


def all_queries(dashboard: dict[str, Any]) -> list[Query]:
    return panel_queries(dashboard) + annotation_queries(dashboard)


def regex_value(values: list[str]) -> str:
    """A multi-value variable the way Grafana formats it for Prometheus: regex-escaped
    values joined with |, then escaped again for the PromQL string literal."""
    escaped = "|".join(re.escape(v) for v in values)
    return ("(" + escaped + ")").replace("\\", "\\\\")


def fill(
    expr: str,
    jobs: list[str],
    instances: list[str],
    rate_interval: str = "1m",
    cluster: tuple[str, str] = ("cell", ".*"),
) -> str:
    """Variables as Grafana fills them; the cluster variable (label, value) is All by
    default, which matches nodes without the label too."""
    label, value = cluster
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$job", regex_value(jobs))
        .replace("$instance", regex_value(instances))
        .replace(f"${label}", value)
    )


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_TOKEN = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}


def families(expr: str) -> set[str]:
    """Metric names in a query: the identifiers that are not functions (followed by a
    parenthesis), keywords, label names or inside strings, selectors and ranges."""
    bare = _STRING.sub("", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    return {name for name, call in _TOKEN.findall(bare) if not call and name not in _KEYWORDS}
