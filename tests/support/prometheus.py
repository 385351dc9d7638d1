"""A real Prometheus (Debian's package) on loopback, the rules rendered for it, and a view
of its HTTP API as the dashboard and alert tests read it."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import FIXTURES, http_get, listening_process, toolkit_port, wait_until
from tests.support.dashboard_queries import fill, load_dashboard
from tests.support.scripts import HAVE_JSONNET, NO_JSONNET, RULES_FILE, render_mixin

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMETHEUS_MARKS = [
    pytest.mark.skipif(
        not Path(PROMETHEUS).is_file(), reason="prometheus not installed (Debian package)"
    ),
    pytest.mark.skipif(not HAVE_JSONNET, reason=NO_JSONNET),
    pytest.mark.skipif(
        importlib.util.find_spec("ksm_exporter.__main__") is None,
        reason="the exporter (python -m ksm_exporter) is not in this tree yet",
    ),
]

# The job examples/prometheus.yml names: what the mixin's default selector picks.
JOB = "ksm-exporter"
# The committed dashboard's configuration with the windows, thresholds and `for` turned
# down, rendered by the mixin's renderer as an operator's configuration would be.
RULES: dict[str, Any] = {
    "ksmFlappingThreshold": 3,
    "ksmFlappingWindow": "1m",
    "ksmFlappingFor": "2s",
    "ksmPressureFor": "2s",
    "ksmVmNegativeProfitBytes": 0,  # db,primary's 640 bytes lost are enough here
    "ksmVmNegativeProfitFor": "2s",
    "ksmWindowsInterval": "1s",  # the long-window records from the first seconds on
    "ksmdCpuWindow": "10s",  # the fleet's ksmd CPU is recorded over the budget's window
}
DASH = load_dashboard()
RATE_INTERVAL = "10s"  # what Grafana's $__rate_interval gives for a 1s scrape interval
KSMTUNED_CONF = FIXTURES / "ksmtuned/stock.conf"  # ksmtuned's defaults: threshold 20 %


@dataclass
class Fleet:
    prometheus: str
    instances: dict[str, str]  # node name -> instance label

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http_get(url)
        assert status == 200, body
        reply = json.loads(body)
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def panel_query(self, title: str) -> list[dict[str, Any]]:
        """The single query of a dashboard panel, variables as Grafana fills them."""
        (result,) = self.panel_queries(title)
        return result

    def panel_queries(self, title: str) -> list[list[dict[str, Any]]]:
        """Each query of a dashboard panel, in refId order."""
        (panel,) = (p for p in DASH["panels"] if p["title"] == title)
        return [self.query(self.filled(t["expr"])) for t in panel["targets"]]

    def filled(self, expr: str) -> str:
        return fill(expr, [JOB], list(self.instances.values()), RATE_INTERVAL)

    def by_node(self, result: list[dict[str, Any]]) -> dict[str, float]:
        names = {v: k for k, v in self.instances.items()}
        return {names[s["metric"]["instance"]]: float(s["value"][1]) for s in result}

    def alerts(self, name: str, state: str = "firing") -> dict[str, dict[str, Any]]:
        names = {v: k for k, v in self.instances.items()}
        return {
            names[a["labels"]["instance"]]: a
            for a in self.api("alerts")["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == state
        }

    def by_vm(self, result: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
        names = {v: k for k, v in self.instances.items()}
        return {
            (names[s["metric"]["instance"]], s["metric"]["vm"]): float(s["value"][1])
            for s in result
        }


@contextlib.contextmanager
def run_server(name: str, args: list[str], tmp: Path) -> Iterator[str]:
    """Start a Prometheus-style server on 127.0.0.1 port 0 (exporter-toolkit's "Listening
    on" line, logged at info, names the port it bound; its log in tmp/NAME-*.log) and wait
    until its /-/ready answers 200; yield its host:port, terminate it on exit."""
    command = [*args, "--web.listen-address=127.0.0.1:0", "--log.level=info"]
    with listening_process(command, tmp, name, toolkit_port, cwd=tmp, timeout=20) as server:
        address = f"127.0.0.1:{server.port}"

        def ready() -> bool:
            if server.proc.poll() is not None:
                raise AssertionError(f"{name} exited {server.proc.returncode}: {server.log()}")
            try:
                return http_get(f"http://{address}/-/ready", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout=20, what=f"{name} to be ready")
        yield address


@contextlib.contextmanager
def run_prometheus(
    tmp: Path,
    targets: list[str],
    *,
    config: dict[str, Any] = RULES,
    labels: dict[str, str] | None = None,
    alertmanager: str | None = None,
    scrape_options: dict[str, Any] | None = None,
) -> Iterator[str]:
    """Prometheus scraping `targets` (job JOB, file_sd with `labels`, and `scrape_options`
    such as label_value_length_limit) every second with the rules the mixin renders for
    `config` (the _config keys to change), sending alerts to `alertmanager` (host:port)."""
    (tmp / "targets.json").write_text(
        json.dumps([{"targets": targets, "labels": labels or {"role": "compute"}}])
    )
    rendered = render_mixin(tmp / "mixin", config)
    (tmp / "ksm.rules.yml").write_text(rendered[RULES_FILE])
    prometheus_config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["ksm.rules.yml"],
        "scrape_configs": [
            {
                "job_name": JOB,
                "file_sd_configs": [{"files": ["targets.json"], "refresh_interval": "1s"}],
                **(scrape_options or {}),
            }
        ],
    }
    if alertmanager:
        prometheus_config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
        }
    (tmp / "prometheus.yml").write_text(json.dumps(prometheus_config))  # JSON is YAML
    args = [
        PROMETHEUS,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
    ]
    with run_server("prometheus", args, tmp) as address:
        yield f"http://{address}"
