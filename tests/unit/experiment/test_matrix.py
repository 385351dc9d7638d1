"""The matrices the experiment prints: the documented JSON keys, the aligned table."""

from __future__ import annotations

import json

from ksm_exporter.experiment.matrix import KEYS, Matrix, matrices_json, matrices_table
from tests.support.experiment import JSON_KEYS

DISABLED = Matrix(8783, 23273, 0, 0.0, 0, 0, None, 0.0)


ENABLED = Matrix(6959, 25097, 1824, 3.5, 1900000000, 14, 62.5, 12.34)


def test_json_has_exactly_the_documented_keys() -> None:
    out = matrices_json(DISABLED, ENABLED)
    assert set(out) == {"disabled", "enabled"}
    assert set(out["disabled"]) == set(out["enabled"]) == JSON_KEYS == set(KEYS)
    assert out["enabled"]["settle_seconds"] == 62.5
    assert out["disabled"]["settle_seconds"] is None
    assert json.loads(json.dumps(out)) == out


def test_table_rows_are_aligned_and_use_the_report_spellings() -> None:
    lines = matrices_table(DISABLED, ENABLED).splitlines()
    assert "KSM disabled" in lines[1] and "KSM enabled" in lines[1]
    assert set(lines[2]) == {"-"}
    body = {line[:24].strip(): line[24:].split() for line in lines[3:]}
    assert body["Mem used (MB)"] == ["8783", "6959"]
    assert body["Mem free (MB)"] == ["23273", "25097"]
    assert body["KSM saved (MB)"] == ["0", "1824"]
    assert body["Sharing_Rate"] == ["0", "3.5"]
    assert body["Settle (s)"] == ["-", "62.50"]
    assert body["ksmd CPU (s)"] == ["0.00", "12.34"]
    # Right-aligned: every number of a column ends in the same place.
    assert len({len(line) for line in lines if not line.startswith("-")}) == 1


def test_missing_values_print_as_dash() -> None:
    old = Matrix(100, 200, 5, 2.0, None, 3, None, None)  # a kernel before 6.1, no ksmd
    rows = {line[:24].strip(): line[24:].split() for line in matrices_table(old, old).splitlines()}
    assert rows["General_Profit (bytes)"] == rows["ksmd CPU (s)"] == ["-", "-"]
    assert matrices_json(old, old)["enabled"]["general_profit_bytes"] is None
