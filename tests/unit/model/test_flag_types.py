"""Flag value types: what each accepts, and the one-line reason for what it refuses."""

from __future__ import annotations

import argparse
import re

import pytest

from ksm_exporter.model.flag_types import (
    fraction,
    non_negative_int,
    parse_duration,
    positive_int,
    regex,
)


@pytest.mark.parametrize(
    "text, seconds",
    [("1s", 1.0), ("250ms", 0.25), ("1m30s", 90.0), ("2h", 7200.0), ("0.5", 0.5), (" 3 ", 3.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "kind, text, reason",
    [
        (parse_duration, "1x", "not a duration: '1x' (try 1s or 500ms)"),
        (parse_duration, "s1", "not a duration: 's1' (try 1s or 500ms)"),
        (parse_duration, "", "not a duration: '' (try 1s or 500ms)"),
        (parse_duration, "0s", "duration must be positive: '0s'"),
        (parse_duration, "-1", "duration must be positive: '-1'"),
        (positive_int, "0", "must be at least 1: '0'"),
        (positive_int, "1.5", "not a whole number: '1.5'"),
        (non_negative_int, "-1", "must be at least 0: '-1'"),
        (fraction, "1.5", "must be between 0 and 1: '1.5'"),
        (fraction, "half", "not a number: 'half'"),
        (regex, "(", "not a regular expression: '(': missing ), unterminated subpattern"),
    ],
)
def test_refused_with_a_reason(kind: object, text: str, reason: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as e:
        kind(text)  # type: ignore[operator]
    assert str(e.value).startswith(reason)


def test_accepted_values() -> None:
    assert (positive_int("7"), non_negative_int("0"), fraction("0.75")) == (7, 0, 0.75)
    assert regex("^kvm$") == re.compile("^kvm$")
