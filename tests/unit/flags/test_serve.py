"""The daemon's flags: each collector's options, declared with the collector, under
--collector.NAME.OPTION; the older spellings kept as aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from ksm_exporter.collectors.registry import COLLECTORS
from ksm_exporter.flags import watch
from ksm_exporter.flags.parser import flag_names, given_flags
from ksm_exporter.flags.serve import parser


def test_every_collector_option_is_named_after_its_collector() -> None:
    options = [(c.name, o) for c in COLLECTORS for o in c.options]
    assert {o.flag for _, o in options} == {
        "--collector.settle.full-scans",
        "--collector.process.pattern",
        "--collector.process.max",
        "--collector.ksmtuned.config",
    }
    for name, option in options:
        assert option.flag.startswith(f"--collector.{name}."), option.flag
    dests = [o.dest for _, o in options]
    assert len(dests) == len(set(dests))


def test_settle_full_scans_keeps_its_old_spelling() -> None:
    assert parser().parse_args([]).settle_full_scans == 3
    assert parser().parse_args(["--collector.settle.full-scans=4"]).settle_full_scans == 4
    assert parser().parse_args(["--settle.full-scans", "5"]).settle_full_scans == 5
    # A reload names the flag as --help lists it, whichever spelling the file used.
    p = parser()
    assert given_flags(p, ["--settle.full-scans=4"]) == {"settle_full_scans": 4}
    assert flag_names(p)["settle_full_scans"] == "--collector.settle.full-scans"


def test_help_lists_each_flag_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # no wrapping inside a flag's name
    text = parser().format_help()
    usage, entries = text.split("\n\n", 1)
    assert "--collector.settle.full-scans K" in usage and "--settle.full-scans" not in usage
    assert entries.count("--collector.settle.full-scans") == 1
    assert entries.count("--settle.full-scans") == 1  # in the entry: "alias --settle..."
    assert "(default 3); alias --settle.full-scans" in entries


@pytest.mark.parametrize(
    "flag",
    [
        "--collector.settle.full-scans=0",
        "--settle.full-scans=x",
        "--collector.process.max=0",
        "--collector.process.pattern=(",
    ],
)
def test_a_wrong_value_is_one_line_naming_the_flag(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        parser().parse_args([flag])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"ksm-exporter: error: argument {flag.split('=')[0]}: ")


def test_watch_takes_the_ksmtuned_collectors_config_flag() -> None:
    args = watch.parser().parse_args(["--collector.ksmtuned.config=/tmp/k.conf"])
    assert args.ksmtuned_config == Path("/tmp/k.conf")
    assert watch.parser().parse_args([]).ksmtuned_config == Path("/etc/ksmtuned.conf")
