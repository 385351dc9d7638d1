"""What a flag's value may be (durations, counts, fractions, regular expressions) and how a
module declares a flag without argparse, so a collector can declare its own options.

A value type turns the text after `--flag=` into a value or raises ArgumentTypeError,
whose message argparse prints after the flag's name on one line."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go-style duration ("250ms", "1s", "1m30s") or plain seconds, to seconds > 0."""
    s = text.strip()
    try:
        seconds = float(s)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(s):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNIT[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise argparse.ArgumentTypeError(
                f"not a duration: {text!r} (try 1s or 500ms)"
            ) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return seconds


def _whole_number(text: str, minimum: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}: {text!r}")
    return n


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def fraction(text: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return f


def regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"not a regular expression: {text!r}: {e}") from None


@dataclass(frozen=True)
class Option:
    """A flag that takes a value, declared where the value is used (a collector's options:
    `--collector.NAME.OPTION`). `aliases` are older spellings that keep working; --help
    lists the flag once, naming them."""

    flag: str
    dest: str
    type: Callable[[str], Any]
    default: Any
    metavar: str
    help: str  # argparse help: a literal % is written %%
    aliases: tuple[str, ...] = ()
