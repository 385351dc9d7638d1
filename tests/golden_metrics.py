"""The end-to-end golden files: the whole /metrics output of the real exporter process on
each fixture tree, less the build info line (it carries the version).

Regenerate after an intended change of the output with `make golden`
(python -m tests.update_golden) and review the diff like code.
"""

from __future__ import annotations

from pathlib import Path

from .support import FIXTURES, run_exporter

GOLDEN = Path(__file__).parent / "golden"
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


def normalise(body: str) -> str:
    return "".join(
        line + "\n" for line in body.splitlines() if not line.startswith("ksm_exporter_build_info{")
    )


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
