"""The one rule for numbers read from files and from the network: a bounded conversion.

A number in a state file, or in what a server answered, may be anything JSON can spell:
an integer of 400 digits, 1e400 (infinity once parsed), NaN, a negative where none is
allowed, `true`. Each is checked against the range the field can hold *before* anything
converts it: comparing a Python int with bounds never overflows, while float(10**309) or
math.isfinite(10**309) raises OverflowError. What is out of range is a ValueError naming
the field (the caller makes it that entry's error), never another exception.

The bounds are those of whatever wrote the figure (docs/CONTRACT.md, "Files it reads"),
so what the exporter writes it reads back.
"""

from __future__ import annotations

import math
from typing import Union

# The kernel prints its counters with %lu/%llu (64 bits unsigned) or %ld (64 bits signed).
U64_MAX = 2**64 - 1
S64_MIN, S64_MAX = -(2**63), 2**63 - 1

Bound = Union[int, float]


class OutOfRange(ValueError):
    """A number that is not one the field can hold; the message says which field."""


class Unconverted:
    """A JSON number too long to be one any field holds (more than MAX_NUMBER_CHARS
    characters): kept as this marker rather than converted, which takes quadratic time
    for a long integer on Python before 3.11, so the bound check refuses it at no cost."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text[:20]

    def __repr__(self) -> str:
        return f"Unconverted({self.text!r}...)"


# The longest JSON number converted: 2^64 has 20 digits, a float's repr at most 24 chars.
MAX_NUMBER_CHARS = 40


def bounded_int(value: object, what: str, low: int, high: int) -> int:
    """`value` if it is an integer (not a bool, not a float) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OutOfRange(f"{what}: not a whole number from {low} to {high}")
    return value


def bounded_float(value: object, what: str, low: Bound, high: Bound) -> float:
    """`value` as a float if it is a finite number (an int of any size, or a float; not a
    bool) in [low, high]. The int is compared before float() sees it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OutOfRange(f"{what}: not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise OutOfRange(f"{what}: not a finite number")
    if not low <= value <= high:
        raise OutOfRange(f"{what}: not a number from {low:g} to {high:g}")
    return float(value)


def json_int(text: str) -> int | Unconverted:
    """json.loads' parse_int: no int() of a number no field can hold."""
    return Unconverted(text) if len(text) > MAX_NUMBER_CHARS else int(text)


def json_float(text: str) -> float | Unconverted:
    """json.loads' parse_float (1e400 becomes inf, which the bounds refuse)."""
    return Unconverted(text) if len(text) > MAX_NUMBER_CHARS else float(text)
