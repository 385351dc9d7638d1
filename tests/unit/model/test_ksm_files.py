"""The one table of KSM files: each file is one metric, each metric one file."""

from __future__ import annotations

from ksm_exporter.model.ksm_files import ADVISOR_MODE, BY_FILE, FILE_METRICS


def test_each_file_has_exactly_one_metric() -> None:
    files = [m.file for m in FILE_METRICS]
    assert len(files) == len(set(files)) == len(BY_FILE), "a file with two metrics"
    names = [m.name for m in FILE_METRICS]
    assert len(names) == len(set(names)), "a metric for two files"
    # advisor_mode is text, exported as ksm_advisor_mode{mode}, not through the table.
    assert ADVISOR_MODE not in files
