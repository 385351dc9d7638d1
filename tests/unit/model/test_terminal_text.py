"""What `status`, `watch` and `transitions` print of what others wrote: escaped, one row
per VM, long names cut; `--json` exact. (tests/system/test_attacks.py does the same with a
real process.)"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ksm_exporter.model.terminal_text import CUT_MARK, NAME_COLUMN, shown
from tests.support import FIXTURES, run_cli
from tests.support.fake_procfs import ksm_stat_6_18, write_process
from tests.support.hostile_http import hostile_server, raw

# What a VM's owner can put in its -name to act on the operator's terminal.
HOSTILE_NAMES = [
    "title\x1b]0;owned\x07",  # OSC 0: the window title, ended by BEL
    "clip\x1b]52;c;ZWNobyBvd25lZA==\x1b\\",  # OSC 52: the clipboard
    "clear\x1b[2J\x1b[H",  # CSI: clear the screen, cursor home
    "bell\x07\x07",
    "over\rforged-vm",  # CR: the row's start overwritten
    "rows\nforged-vm  -  1  999999  999",  # a newline: a forged row
    "rows2\r\nforged-vm2",
    "\u202eevil\u202c",  # RIGHT-TO-LEFT OVERRIDE ... POP
    "iso\u2066late\u2069",  # LEFT-TO-RIGHT ISOLATE ... POP
    "zero\u200bwidth\u200f",
    "c1\x9b31m",  # C1 CSI, an 8-bit terminal's escape
    "line\u2028sep\u2029",
    "back\\x1b",  # a literal backslash: shown doubled, so it is not taken for an escape
    "del\x7f",
    "tab\tstop",
    "nul-free \x00?",  # cmdline splits at NUL: only "nul-free " arrives
    "x" * 5000,  # long
    "\u0627\u0644\u0633\u0644\u0627\u0645",  # Arabic, printable: as is
]


def raw_controls(text: str) -> list[str]:
    """Characters of `text` a terminal would act on (newlines between rows aside)."""
    return [
        c
        for c in text
        if c != "\n" and (unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or c == "\x7f")
    ]


def test_escapes_are_shown_as_python_escapes() -> None:
    assert shown("a\x1b]0;x\x07b") == "a\\x1b]0;x\\x07b"
    assert shown("\u202eevil") == "\\u202eevil"
    assert shown("tag\U000e0041") == "tag\\U000e0041"
    assert shown("back\\slash") == "back\\\\slash"
    assert shown("l\u00e9a \u0627") == "l\u00e9a \u0627"  # printable text as is


def test_long_text_is_cut_with_a_mark_never_inside_an_escape() -> None:
    assert shown("x" * 100, 10) == "x" * 9 + CUT_MARK
    assert shown("x" * 10, 10) == "x" * 10
    assert shown("xxxxxxx\x1b", 10) == "xxxxxxx" + CUT_MARK  # \x1b would not fit
    assert shown("xxxxx\x1b", 10) == "xxxxx\\x1b"


@settings(max_examples=300)
@given(st.text(), st.none() | st.integers(2, 80))
def test_nothing_a_terminal_acts_on_gets_through(text: str, limit: int | None) -> None:
    out = shown(text, limit)
    assert not raw_controls(out) and "\n" not in out
    assert limit is None or len(out) <= limit
    if limit is None:  # what is shown maps back to one string only
        assert unescaped(out) == text


def unescaped(text: str) -> str:
    return re.sub(
        r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})",
        lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(1)[1:], 16)),
        text,
    )


def fake_node(tmp_path: Path, names: list[str]) -> Path:
    proc = tmp_path / "proc"
    write_process(proc, 1, "systemd", cmdline=["/sbin/init"])
    for i, name in enumerate(names):
        write_process(
            proc,
            3000 + i,
            "qemu-system-x86",
            cmdline=["/usr/bin/qemu-system-x86_64", "-name", f"guest={name},debug-threads=on"],
            ksm_stat=ksm_stat_6_18(10, 0, 1000 + i, 4096),
        )
    return proc


def test_status_prints_one_escaped_row_per_vm_and_json_exact(tmp_path: Path) -> None:
    proc = fake_node(tmp_path, HOSTILE_NAMES)
    sysfs = f"--path.sysfs={FIXTURES}/linux-6.18/sys"
    r = run_cli("status", sysfs, f"--path.procfs={proc}")
    assert r.returncode == 0, r.stderr
    assert not raw_controls(r.stdout + r.stderr)
    table = r.stdout.split("-" * 33 + "\n")[2].splitlines()
    assert len(table) == 1 + len(HOSTILE_NAMES)  # the header, one row each: none forged
    rows = {int(line.split()[-3]): line for line in table[1:]}
    assert sorted(rows) == list(range(3000, 3000 + len(HOSTILE_NAMES)))
    assert rows[3000].startswith("title\\x1b]0;owned\\x07 ")
    assert rows[3005].startswith("rows\\x0aforged-vm  -  1  999999  999 ")
    assert rows[3007].startswith("\\u202eevil\\u202c ")
    assert rows[3012].startswith("back\\\\x1b ")
    assert rows[3016].startswith("x" * (NAME_COLUMN - 1) + CUT_MARK + " ")
    # --json: the names exact (json.dumps escapes them its own way).
    r = run_cli("status", "--json", sysfs, f"--path.procfs={proc}")
    assert not raw_controls(r.stdout)
    names = {vm["pid"]: vm["vm"] for vm in json.loads(r.stdout)["vms"]}
    assert names[3000] == HOSTILE_NAMES[0] and names[3016] == "x" * 5000
    assert names[3015] == "nul-free "


@pytest.mark.parametrize("where", ["state file", "reason phrase"])
def test_transitions_escapes_what_the_source_says(tmp_path: Path, where: str) -> None:
    if where == "state file":
        # The path is the operator's, but may hold anything a file name can.
        state = tmp_path / "state\x1b[2J.jsonl"
        state.write_text('{"run": 1, "timestamp": 1, "to": "running", "cause": "x"}\n{"a"\n')
        r = run_cli("transitions", f"--state.file={state}")
        assert "state\\x1b[2J.jsonl: skipped 1 lines (too short)" in r.stderr
    else:
        reply = b"HTTP/1.1 404 \x1b]0;owned\x07\xe9\r\nContent-Length: 0\r\n\r\n"
        with hostile_server(raw(reply)) as url:
            r = run_cli("transitions", f"--url={url}")
        assert r.stderr.endswith("HTTP 404 \\x1b]0;owned\\x07\u00e9\n"), r.stderr
    assert r.returncode == 1 and not raw_controls(r.stdout + r.stderr)
