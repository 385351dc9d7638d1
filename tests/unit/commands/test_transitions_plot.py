"""`transitions --plot FILE.svg|FILE.png`: the landing page's picture from a running
exporter (its /history and /transitions) or from a --state.file's edges."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ksm_exporter.model.derived import RunState
from ksm_exporter.model.edge_cause import Cause, EdgeContext
from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.state.state_file import StateFile
from ksm_exporter.state.transitions import TransitionTracker
from tests.support import exporter_after_a_start, run_cli

SVG = "{http://www.w3.org/2000/svg}"
GIB = 2**30
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def edges_of(svg: ET.Element) -> list[tuple[str | None, str | None]]:
    return [
        (g.get("data-cause"), g.get("data-state"))
        for g in svg.iter(f"{SVG}g")
        if g.get("class") == "edge"
    ]


def series_of(svg: ET.Element) -> set[str | None]:
    return {p.get("data-series") for p in svg.iter(f"{SVG}path") if p.get("data-series")}


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    """Three edges: ksmtuned starts KSM below its threshold, a person stops it, ksmtuned
    starts it again; the controller's name is markup."""
    tracker = TransitionTracker()
    mem = MemInfo(total=32 * GIB, free=5 * GIB, available=6 * GIB)
    low = EdgeContext(Cause.KSMTUNED, None, 6 * GIB, 20 * GIB, 5 * GIB)
    tracker.observe(0, mem, 1_700_000_000.0)
    tracker.observe(1, mem, 1_700_000_600.0, low)
    tracker.observe(0, mem, 1_700_003_600.0, EdgeContext(Cause.OTHER, "<b>x</b>"))
    tracker.observe(1, mem, 1_700_003_660.0, low)
    path = tmp_path / "state"
    StateFile(path).save(tracker.state().history)
    return path


def test_svg_from_a_state_file_has_every_edge_and_no_markup_from_it(
    state_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ksm.svg"
    r = run_cli("transitions", f"--state.file={state_file}", f"--plot={out}")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout == f"Wrote {out} (3 transitions).\n"
    text = out.read_text()
    svg = ET.fromstring(text.split("\n", 1)[1])
    assert edges_of(svg) == [
        ("ksmtuned", RunState.RUNNING.value),
        ("other", RunState.STOPPED.value),
        ("ksmtuned", RunState.RUNNING.value),
    ]
    # What a state file tells: the memory at the edges, ksmtuned's threshold from them.
    assert series_of(svg) == {
        "mem_free_bytes",
        "mem_available_bytes",
        "ksmtuned_free_bytes",
        "ksmtuned_threshold_bytes",
    }
    assert "<b>" not in text and "other (&lt;b&gt;x&lt;/b&gt;)" in text


def test_png_with_matplotlib_and_a_clear_error_for_another_suffix(
    state_file: Path, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "ksm.png"
    r = run_cli("transitions", f"--state.file={state_file}", f"--plot={out}")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes().startswith(PNG_MAGIC) and out.stat().st_size > 10_000
    r = run_cli("transitions", f"--state.file={state_file}", f"--plot={tmp_path}/ksm.gif")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        f"ksm-exporter transitions: --plot {tmp_path}/ksm.gif: "
        "the file name must end in .svg or .png\n"
    )


def test_from_a_running_exporter_the_picture_of_its_page(tmp_path: Path) -> None:
    with exporter_after_a_start(tmp_path) as exporter:
        history = json.loads(exporter.get("/history")[1])
        assert history["columns"][0] == "time" and history["points"]
        out = tmp_path / "ksm.svg"
        r = run_cli("transitions", f"--url={exporter.url}", f"--plot={out}")
        assert r.returncode == 0 and r.stderr == "", r.stderr
        png = tmp_path / "ksm.png"
        pytest.importorskip("matplotlib")
        r = run_cli("transitions", f"--url={exporter.url}/transitions", f"--plot={png}")
        assert r.returncode == 0 and r.stderr == "", r.stderr
    svg = ET.fromstring(out.read_text().split("\n", 1)[1])
    assert edges_of(svg) == [("unknown", RunState.RUNNING.value)]
    # The watcher's points: memory and savings; no threshold (no ksmtuned.conf read).
    assert series_of(svg) == {
        "mem_free_bytes",
        "mem_available_bytes",
        "ksmtuned_free_bytes",
        "saved_bytes",
    }
    assert png.read_bytes().startswith(PNG_MAGIC)
