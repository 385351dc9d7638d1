"""Read ksmtuned's configuration, /etc/ksmtuned.conf.

ksmtuned sources the file with bash (`. /etc/ksmtuned.conf`) and then fills in each unset
or empty setting with `${KSM_THRES_COEF:-20}` and the like. This reader follows the part
of bash such a file uses: `NAME=value` lines, optionally after `export`, with single or
double quotes and backslashes, and comments from a `#` that starts a word. A line that is a
command rather than assignments only (`NAME = 1`, `echo ...`) sets nothing, as in bash;
a quote left open ends the file, as bash gives up there. (A quoted value spanning lines,
valid bash, is not supported: no ksmtuned setting needs one.)
Values must be decimal integers; another value is an error and the default is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_PATH = Path("/etc/ksmtuned.conf")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")


@dataclass(frozen=True)
class KsmtunedConfig:
    """ksmtuned's settings; the defaults are those of the ksmtuned script."""

    KSM_THRES_COEF: int = 20  # percent of MemTotal
    KSM_THRES_CONST: int = 2048  # kB, the threshold's floor
    KSM_NPAGES_BOOST: int = 300
    KSM_NPAGES_DECAY: int = -50
    KSM_NPAGES_MIN: int = 64
    KSM_NPAGES_MAX: int = 1250
    KSM_SLEEP_MSEC: int = 10
    KSM_MONITOR_INTERVAL: int = 60  # seconds


SETTINGS = tuple(f.name for f in fields(KsmtunedConfig))


def shell_words(line: str) -> list[str]:
    """Split one line into words as bash does (quotes, backslashes, comments).
    Raises ValueError on an unclosed quote."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        elif c == "#" and not in_word:
            break
        elif c == "\\":
            i += 1
            if i < n:
                word.append(line[i])
            in_word = True
        elif c == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise ValueError("no closing quote (')")
            word.append(line[i + 1 : end])
            i, in_word = end, True
        elif c == '"':
            i += 1
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n and line[i + 1] in '"\\$`':
                    i += 1
                word.append(line[i])
                i += 1
            if i >= n:
                raise ValueError('no closing quote (")')
            in_word = True
        else:
            word.append(c)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(word))
    return words


def parse_assignments(text: str) -> tuple[dict[str, str], list[str]]:
    """NAME -> value of every assignment, the last one winning; and errors by line."""
    assigned: dict[str, str] = {}
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shell_words(line)
        except ValueError as e:
            # bash reads on for the closing quote, hits the end of the file and gives up:
            # what came before is set, nothing after.
            errors.append(f"line {number}: {e}; the rest of the file is ignored, as by bash")
            break
        if words[:1] == ["export"]:
            words = words[1:]
        pairs = [w.partition("=") for w in words]
        if not pairs or not all(sep and _NAME.match(name) for name, sep, _ in pairs):
            continue  # blank, a comment, or a command: no assignment that persists
        for name, _, value in pairs:
            assigned[name] = value
    return assigned, errors


def parse_ksmtuned_conf(text: str) -> tuple[KsmtunedConfig, list[str]]:
    """The configuration and what was wrong with it (each wrong setting keeps its default)."""
    assigned, errors = parse_assignments(text)
    values: dict[str, int] = {}
    for name in SETTINGS:
        value = assigned.get(name, "")
        if value == "":  # ${NAME:-default}: unset and empty both take the default
            continue
        if _INTEGER.match(value):
            values[name] = int(value)
        else:
            errors.append(f"{name}: not a decimal integer: {value[:40]!r}; using the default")
    return KsmtunedConfig(**values), errors


def read_ksmtuned_conf(path: Path) -> tuple[KsmtunedConfig, list[str]]:
    """An absent file is ksmtuned's defaults, as the script only sources it if it exists.
    Raises OSError when the file exists but cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return KsmtunedConfig(), []
    return parse_ksmtuned_conf(data.decode("utf-8", "replace"))
