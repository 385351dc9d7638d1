"""Text from outside (a process's command line, sysfs, the state file, a server) made safe
to print on a terminal.

Any user can start a process named like qemu whose `-name` holds ESC sequences (set the
window title, write the clipboard with OSC 52, move the cursor), BEL, CR, newlines (a
forged table row) or bidi overrides (U+202E turns the rest of the line around). Printed
raw, they act on the operator's terminal. Every character str.isprintable() refuses
(categories Cc, Cf, Cs, Co, Cn, Zl, Zp and every space but ' ') is shown as its Python
escape, `\\x1b`, `\\u202e`, `\\U000e0001`, and a backslash as `\\\\`, so what is shown maps
back to one string only. `--json` prints json.dumps' own escapes instead: exact, and as
safe (every non-ASCII character is a \\u escape).
"""

from __future__ import annotations

# Where a cut name ends: one character, so a cut can never pass for a name.
CUT_MARK = "\u2026"  # …

# A VM name in a table: enough for any platform's names (libvirt's instance-0000abcd,
# KubeVirt's 253-character VMI names are the longest), short of filling the screen.
NAME_COLUMN = 64


def _escape(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c.isprintable():
        return c
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def shown(text: str, limit: int | None = None) -> str:
    """`text` with every control, format (bidi) and separator character escaped, on one
    line; longer than `limit` characters once escaped: cut, ending in CUT_MARK (never
    inside an escape)."""
    if text.isprintable() and "\\" not in text:  # the usual name: nothing to do
        if limit is None or len(text) <= limit:
            return text
        return text[: limit - 1] + CUT_MARK
    pieces = [_escape(c) for c in text]
    if limit is None or sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    out: list[str] = []
    size = 0
    for piece in pieces:
        if size + len(piece) > limit - 1:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out) + CUT_MARK
