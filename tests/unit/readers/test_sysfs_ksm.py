from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ksm_exporter.readers.sysfs_ksm import parse_advisor_mode, parse_int, read_ksm
from tests.support import FIXTURES

KSM = "sys/kernel/mm/ksm"


def test_kernel_2_6_32_has_the_seven_original_files() -> None:
    r = read_ksm(FIXTURES / "linux-2.6.32" / KSM)
    assert r.present and not r.errors
    assert r.values == {
        "full_scans": 152,
        "pages_shared": 26471,
        "pages_sharing": 178960,
        "pages_to_scan": 100,
        "pages_unshared": 103552,
        "pages_volatile": 5320,
        "run": 1,
        "sleep_millisecs": 20,
    }
    assert r.advisor_mode is None


def test_kernel_4_13() -> None:
    r = read_ksm(FIXTURES / "linux-4.13" / KSM)
    assert not r.errors
    assert len(r.values) == 14
    assert r.values["stable_node_chains"] == 2 and r.values["stable_node_dups"] == 17
    assert r.values["max_page_sharing"] == 256


def test_kernel_6_18_every_file_signed_general_profit_and_advisor() -> None:
    r = read_ksm(FIXTURES / "linux-6.18" / KSM)
    assert not r.errors and not r.ignored
    assert len(r.values) == 23  # 24 files, advisor_mode is not an integer
    assert r.values["general_profit"] == -1310720  # node_exporter reads this as unsigned
    assert r.advisor_mode is not None
    assert r.advisor_mode.active == "none" and r.advisor_mode.modes == ("none", "scan-time")


def test_unknown_integer_file_kept_unknown_text_file_ignored() -> None:
    r = read_ksm(FIXTURES / "future" / KSM)
    assert r.values["ksm_merge_budget"] == 42 and r.values["pages_promoted"] == 7
    assert r.ignored == ("some_text_knob",)
    assert r.advisor_mode is not None and r.advisor_mode.active == "scan-time"
    assert r.values["run"] == 5  # running with the offline bit


def test_broken_files_are_skipped_with_reasons_and_the_rest_read() -> None:
    r = read_ksm(FIXTURES / "broken" / KSM)
    assert r.errors == {
        "advisor_mode": "no single [active] mode in 'none scan-time'",
        "full_scans": "empty",
        "general_profit": "outside the signed 64-bit range: -99999999999999999999",
        "max_page_sharing": "longer than 4096 bytes",
        "pages_shared": "not an integer: 'lots'",
        "pages_sharing": "outside the unsigned 64-bit range: 18446744073709551616",
        "pages_unshared": "outside the unsigned 64-bit range: -5",
        "stable_node_dups": "Is a directory",
    }
    assert r.values == {"pages_volatile": -3, "run": 1, "sleep_millisecs": 20, "pages_to_scan": 100}


def test_missing_directory_is_not_present() -> None:
    assert not read_ksm(FIXTURES / "no-ksm" / KSM).present
    assert not read_ksm(FIXTURES / "no-ksm" / KSM, only=("run",)).present


def test_only_reads_the_named_files_and_missing_ones_are_absent() -> None:
    r = read_ksm(FIXTURES / "linux-2.6.32" / KSM, only=("run", "general_profit"))
    assert r.values == {"run": 1} and not r.errors


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("pages_shared", "0\n", 0),
        ("pages_shared", "18446744073709551615", 2**64 - 1),
        ("general_profit", "-9223372036854775808", -(2**63)),
        ("ksm_zero_pages", "-1", -1),
        ("run", " 1 \n", 1),
    ],
)
def test_parse_int_accepts(name: str, text: str, value: int) -> None:
    assert parse_int(name, text) == value


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("pages_shared", ""),
        ("pages_shared", "-1"),
        ("pages_shared", "1.5"),
        ("pages_shared", "0x10"),
        ("general_profit", "9223372036854775808"),
        ("run", "1 2"),
    ],
)
def test_parse_int_rejects(name: str, text: str) -> None:
    with pytest.raises(ValueError):
        parse_int(name, text)


def test_advisor_mode_needs_exactly_one_bracketed_word() -> None:
    assert parse_advisor_mode("[none] scan-time\n").active == "none"
    for bad in ("", "none scan-time", "[none] [scan-time]"):
        with pytest.raises(ValueError):
            parse_advisor_mode(bad)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_permission_denied_is_an_error_for_that_file_only() -> None:
    # Root reads any file whatever its mode, so read in a forked child that became nobody.
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o755)
        tree = Path(d) / "t"
        shutil.copytree(FIXTURES / "linux-2.6.32", tree)
        for p in [tree, *tree.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        (tree / KSM / "pages_shared").chmod(0o000)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.setgid(65534)
                os.setuid(65534)
                r = read_ksm(tree / KSM)
                os.write(wfd, f"{sorted(r.errors.items())} {len(r.values)}".encode())
            finally:
                os._exit(0)
        os.close(wfd)
        with os.fdopen(rfd) as f:
            out = f.read()
        os.waitpid(pid, 0)
    assert out == "[('pages_shared', 'Permission denied')] 7"
