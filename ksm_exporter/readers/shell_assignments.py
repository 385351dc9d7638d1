"""Shell `NAME=value` files: ksmtuned.conf, and the service's settings file
(/etc/default/ksm-exporter, /etc/sysconfig/ksm-exporter).

This follows the part of bash such a file uses: `NAME=value` lines, optionally after
`export`, with single or double quotes and backslashes, and comments from a `#` that
starts a word. A line that is a command rather than assignments only (`NAME = 1`,
`echo ...`) sets nothing, as in bash; a quote left open ends the file, as bash gives up
there. Written by hand: shlex splits words but knows neither assignments nor bash's
rule for an open quote.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


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
