"""--plot: a valid PNG, or how to get matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ksm_exporter.experiment.mergeable import PAGE_SIZE
from ksm_exporter.experiment.plot import INSTALL_HINT, PlotUnavailable, Point, require_matplotlib
from tests.support.experiment import check_png


def test_plot_is_a_valid_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from ksm_exporter.experiment.plot import write_plot

    points = [
        Point(t / 2, min(t, 6) * 3000, min(t, 6) * 3000 * PAGE_SIZE / 2**20) for t in range(20)
    ]
    path = tmp_path / "ksm.png"
    write_plot(points, path, "test", marks=[(3.0, "settled"), (3.2, "PRNG")])
    assert check_png(path) == (800, 550)


def test_without_matplotlib_the_plot_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(PlotUnavailable) as e:
        require_matplotlib()
    assert str(e.value) == INSTALL_HINT
    assert "pip install 'ksm-exporter[plot]'" in INSTALL_HINT
