"""Flapping paged end to end: the exporter on a fixture tree whose `run` the test flips,
a real Prometheus with the rules the mixin renders for a configuration (windows turned down to
seconds), a real Alertmanager (Debian's prometheus-alertmanager), and a webhook served by
the test on 127.0.0.1. One notification for the whole episode, with the target's own
labels and the runbook URL, and nothing resolved while the flapping goes on, although
the change count dips below the threshold between bursts.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, copy_fixture, run_exporter, wait_until, write_ksm
from tests.support.prometheus import (
    JOB,
    KSMTUNED_CONF,
    PROMETHEUS_MARKS,
    Fleet,
    run_prometheus,
    run_server,
)
from tests.support.scripts import default_config

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
pytestmark = [
    *PROMETHEUS_MARKS,
    pytest.mark.skipif(
        not Path(ALERTMANAGER).is_file(),
        reason="prometheus-alertmanager not installed (Debian package)",
    ),
]

# More than 2 changes in 10 s is flapping; the alert keeps firing for 20 s after the
# count was last above that. Built through the configuration an operator would write.
CONFIG = {
    "ksmFlappingThreshold": 2,
    "ksmFlappingWindow": "10s",
    "ksmFlappingFor": "0s",
    "ksmFlappingKeepFiringFor": "20s",
}
TARGET_LABELS = {"cell": "c7", "rack": "r2"}
BURST_GAP = 1.5  # seconds between the changes of a burst
PAUSE = 12  # after a burst: longer than the window, so the count falls to 0


class Webhook:
    """Records every notification Alertmanager posts."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def run_alertmanager(tmp: Path, webhook: str) -> Iterator[str]:
    config = {
        "route": {
            "receiver": "test",
            "group_by": ["alertname", "instance"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "test", "webhook_configs": [{"url": webhook, "send_resolved": True}]}
        ],
    }
    (tmp / "alertmanager.yml").write_text(json.dumps(config))  # JSON is YAML
    args = [
        ALERTMANAGER,
        f"--config.file={tmp / 'alertmanager.yml'}",
        f"--storage.path={tmp / 'alertmanager'}",
        "--cluster.listen-address=",  # no gossip: one instance, loopback only
    ]
    with run_server("alertmanager", args, tmp) as address:
        yield address


def burst(root: Path, run: int) -> int:
    """Three changes of `run`, BURST_GAP apart; returns the final value."""
    for _ in range(3):
        run = 1 - run
        write_ksm(root, "run", run)
        time.sleep(BURST_GAP)
    return run


def test_one_notification_per_flapping_episode(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    write_ksm(root, "run", 1)
    webhook = Webhook()
    flags = [f"--collector.ksmtuned.config={KSMTUNED_CONF}"]
    with contextlib.ExitStack() as stack:
        stack.callback(webhook.close)
        exporter = stack.enter_context(run_exporter(root, *flags, tmp=tmp_path))
        instance = f"127.0.0.1:{exporter.port}"
        alertmanager = stack.enter_context(run_alertmanager(tmp_path, webhook.url))
        url = stack.enter_context(
            run_prometheus(
                tmp_path,
                [instance],
                config=CONFIG,
                labels=TARGET_LABELS,
                alertmanager=alertmanager,
            )
        )
        prometheus = Fleet(url, {"n": instance})
        wait_until(
            lambda: prometheus.query(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 3'),
            timeout=20,
            what="three scrapes",
        )
        run = burst(root, 1)
        wait_until(lambda: webhook.notifications, timeout=30, what="the flapping notification")
        first_at = time.monotonic()
        # The episode goes on: bursts of three changes with pauses longer than the
        # window, so the count falls below the threshold (the alert's expression is
        # false) before the next burst.
        for _ in range(2):
            time.sleep(PAUSE)
            run = burst(root, run)
        time.sleep(3)  # time for a resolved notification to arrive, were there one
        dips = prometheus.query(
            "min_over_time(instance:ksm_run_transitions:increase_flapping_window"
            f"[{round(time.monotonic() - first_at)}s]) <= 2"
        )
        firing = prometheus.alerts("KsmFlapping")

    assert dips, "the change count never fell to the threshold: the test proves nothing"
    assert set(firing) == {"n"}
    assert [n["status"] for n in webhook.notifications] == ["firing"]
    (alert,) = webhook.notifications[0]["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == {
        "alertname": "KsmFlapping",
        "severity": "warning",
        "job": JOB,
        "instance": instance,
        **TARGET_LABELS,
    }
    pattern = default_config()["ksmRunbookURLPattern"]
    assert alert["annotations"]["runbook_url"] == pattern % "ksmflapping"
    assert alert["annotations"]["runbook_url"].startswith("https://")
    assert alert["annotations"]["summary"] == "KSM keeps starting and stopping."
    assert alert["annotations"]["description"].startswith(f"KSM on {instance} changed state ")


def amtool(*args: str) -> str:
    result = subprocess.run(
        [AMTOOL, *args], capture_output=True, text=True, timeout=30, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("alert", "receiver"),
    [("KsmFlapping", "cell1-oncall"), ("KsmSysfsMissing", "ops-tickets")],
)
def test_example_routing_by_the_targets_cell(alert: str, receiver: str) -> None:
    """The example routes the alerts by the example targets' own cell label, which the
    alerts keep, and by their configured severity."""
    amtool("check-config", "examples/alertmanager.yml")
    (group,) = json.loads((REPO / "examples/targets/ksm-rack-a.json").read_text())
    labels = {
        "alertname": alert,
        "severity": default_config()["ksmSeverities"][alert],
        "job": JOB,
        "instance": group["targets"][0].rsplit(":", 1)[0],
        **group["labels"],
    }
    routed = amtool(
        "config",
        "routes",
        "test",
        "--config.file=examples/alertmanager.yml",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert routed.split() == [receiver]
