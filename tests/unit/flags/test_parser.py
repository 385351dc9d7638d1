"""A declared Option as a flag: listed once, its older spellings working and named; what a
reload reads of a settings file's flags."""

from __future__ import annotations

import pytest

from ksm_exporter.flags.parser import (
    FlagError,
    OneLineParser,
    add_option,
    flag_names,
    given_flags,
)
from ksm_exporter.model.flag_types import Option, positive_int

SCANS = Option(
    "--collector.x.scans",
    dest="scans",
    type=positive_int,
    default=3,
    metavar="K",
    help="full scans (default 3)",
    aliases=("--x.scans", "--scans"),
)


def parser() -> OneLineParser:
    p = OneLineParser(prog="t")
    add_option(p, SCANS)
    return p


@pytest.mark.parametrize("flag", ["--collector.x.scans", "--x.scans", "--scans"])
def test_every_spelling_sets_the_value(flag: str) -> None:
    assert parser().parse_args([]).scans == 3
    assert parser().parse_args([f"{flag}=5"]).scans == 5
    assert parser().parse_args([flag, "6"]).scans == 6


def test_listed_once_naming_its_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping inside a flag's name
    text = parser().format_help()
    assert text.count("--collector.x.scans") == 2  # usage and its entry
    assert text.count("--x.scans") == 1 and text.count("--scans") == 1
    assert "full scans (default 3); alias --x.scans, --scans" in text


def test_a_wrong_value_names_the_spelling_used(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parser().parse_args(["--x.scans=0"])
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        "t: error: argument --x.scans: must be at least 1: '0' (see --help)\n"
    )


def test_a_reload_reads_aliases_under_the_listed_name() -> None:
    p = parser()
    assert given_flags(p, ["--x.scans=4"]) == {"scans": 4}
    assert given_flags(p, []) == {}
    assert flag_names(p) == {"help": "-h", "scans": "--collector.x.scans"}
    with pytest.raises(FlagError, match="argument --scans: not a whole number: 'x'"):
        given_flags(p, ["--scans=x"])
