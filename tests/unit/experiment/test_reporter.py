"""The step and progress lines the experiment prints, on a terminal and into a pipe."""

from __future__ import annotations

import io

from ksm_exporter.experiment.reporter import Reporter


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    out = FakeTty()
    rep = Reporter(out)
    rep.progress(10, 1, 0.5)
    rep.progress(20, 2, 1.0)
    rep.step(6, "next")
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 2
    assert text.endswith("full scans 2  elapsed 1.0s\nstep 6/8: next\n")


def test_progress_into_a_pipe_is_a_line_every_few_seconds() -> None:
    out = io.StringIO()
    rep = Reporter(out)
    for i in range(50):
        rep.progress(i, 0, i / 10)
    assert out.getvalue().count("\n") == 1
    assert "\r" not in out.getvalue()
