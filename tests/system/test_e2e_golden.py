"""The real exporter process on each fixture tree: whole /metrics output against golden
files, and promtool's linter on it (as node_exporter's end-to-end test does)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.golden_metrics import GOLDEN_TREES, golden_path, normalise, scrape_tree

PROMTOOL = shutil.which("promtool")


@pytest.fixture(scope="module", params=GOLDEN_TREES)
def scraped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    tree = request.param
    return tree, scrape_tree(tree, tmp_path_factory.mktemp(tree))


def test_metrics_match_golden_file(scraped: tuple[str, str]) -> None:
    tree, body = scraped
    assert "ksm_exporter_build_info{version=" in body
    assert normalise(body) == golden_path(tree).read_text(), (
        f"/metrics on {tree} differs from {golden_path(tree)}; if intended, run `make golden`"
    )


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_check_metrics_is_clean(scraped: tuple[str, str]) -> None:
    _, body = scraped
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
