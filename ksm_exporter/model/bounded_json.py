"""JSON as every command and the state file loader read it: nesting bounded, numbers left
to the one bounded conversion (model/numbers.py).

json.loads recurses once per level of nesting: `[[[[...` a few thousand deep ends in a
RecursionError, and on a thread with a small stack could end the process. So the depth is
measured first, without recursion, in C-speed passes: strings are cut out, every other
character but brackets dropped, then each pass deletes the innermost `[]` and `{}` pairs;
what is left after MAX_DEPTH passes was nested deeper (or did not match). Numbers are kept
unconverted when longer than any field can hold, and NaN or Infinity come out as floats
that the bounds refuse: a number is never the document's error, only its entry's.
"""

from __future__ import annotations

import json
import re

from ksm_exporter.model.numbers import json_float, json_int

# A transition is an object of scalars, /transitions a list of them: 2 levels. A newer
# version may nest a little in keys this one ignores.
MAX_DEPTH = 8

# A JSON string, escapes included; one left open runs to the end (json.loads refuses it
# then). The unrolled form repeats single characters only: linear, no backtracking stack.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def nesting_within(text: str, max_depth: int = MAX_DEPTH) -> bool:
    """Whether json.loads can parse `text` without nesting deeper than `max_depth`: its
    brackets outside strings match and nest at most that deep (or open no more often)."""
    if text.count("[") + text.count("{") <= max_depth:  # the usual line: no pass at all
        return True
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", text))
    for _ in range(max_depth):
        brackets, removed = _INNERMOST.subn("", brackets)
        if not removed:  # nothing left, or brackets that cannot match
            break
    return not brackets


def loads(text: str, max_depth: int = MAX_DEPTH) -> object:
    """The JSON value of `text`; ValueError (with a short reason) when it is not JSON or
    is nested deeper than `max_depth`. Numbers come out as int, float (nan and inf
    included) or numbers.Unconverted: check them with numbers.bounded_*."""
    if not nesting_within(text, max_depth):
        raise ValueError(f"brackets unmatched or nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_int=json_int, parse_float=json_float)
    except RecursionError:  # not reached after the check above; never a traceback
        raise ValueError(f"nested deeper than {max_depth} levels") from None
