"""The end-to-end golden files: the whole /metrics output of the real exporter process on
each fixture tree, less the build info line (it carries the version).

Regenerate after an intended change of the output with `make golden`
(python -m tests.update_golden) and review the diff like code. The collectors' durations
are masked.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import FIXTURES, run_exporter

GOLDEN = Path(__file__).parent.parent / "golden"
GOLDEN_TREES = (
    "linux-2.6.32",
    "linux-4.13",
    "linux-6.18",
    "future",
    "broken",
    "no-ksm",
    "procfs-vms",
    "procfs-old",
)
# The machine's own /etc/ksmtuned.conf must not leak into the golden output.
KSMTUNED_CONF = FIXTURES / "ksmtuned" / "stock.conf"


DURATION = "ksm_scrape_collector_duration_seconds{"


def normalise(body: str) -> str:
    """The body less what changes from run to run: the build info line (the version) and
    the collectors' durations (kept, with their value masked)."""
    lines = []
    for line in body.splitlines():
        if line.startswith("ksm_exporter_build_info{"):
            continue
        if line.startswith(DURATION):
            line = line.rpartition(" ")[0] + " <duration>"
        lines.append(line + "\n")
    return "".join(lines)


def scrape_tree(name: str, tmp: Path) -> str:
    with run_exporter(
        FIXTURES / name,
        "--web.disable-exporter-metrics",
        f"--collector.ksmtuned.config={KSMTUNED_CONF}",
        tmp=tmp,
    ) as exporter:
        status, body = exporter.get("/metrics")
    assert status == 200, body
    return body


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.metrics"
