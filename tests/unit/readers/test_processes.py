"""Readers of /proc/PID files, /proc/vmstat, and qemu's -name, on fixture trees and texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ksm_exporter.model.qemu import guest_name, split_option_list, vm_name
from ksm_exporter.readers.ksmd import cpu_seconds, read_ksmd_stat
from ksm_exporter.readers.process_ksm import (
    NoKsmFiles,
    ProcessKsm,
    parse_ksm_stat,
    read_process_ksm,
)
from ksm_exporter.readers.processes import (
    parse_stat,
    read_cmdline,
    read_process_names,
    read_rss_pages,
)
from ksm_exporter.readers.vmstat import parse_vmstat, read_vmstat
from tests.support import FIXTURES, copy_fixture

VMS = FIXTURES / "procfs-vms" / "proc"
OLD = FIXTURES / "procfs-old" / "proc"


def test_names_of_every_process() -> None:
    names = read_process_names(VMS)
    assert names.error is None
    assert names.names == {
        1: "systemd",
        2: "kthreadd",
        20: "ksmd",
        37: "ksmd",
        812: "ksmtuned",
        1001: "qemu-kvm",
        1002: "qemu-system-x86",
        1003: "qemu:db-primary",
        1004: "qemu-kvm",
        1005: "qemu-kvm",
        1007: "qemu-kvm",
        2000: "bash",
        2001: "qemu-img",
        2002: "qemu-ga",
    }


def test_names_skip_a_process_gone_since_listing(tmp_path: Path) -> None:
    proc = copy_fixture("procfs-vms", tmp_path) / "proc"
    # listdir still shows it, but its files are gone: as when it exits mid-walk.
    (proc / "1001").rename(tmp_path / "gone")
    (proc / "1001").symlink_to(tmp_path / "gone-for-good")
    assert 1001 not in read_process_names(proc).names
    assert 1002 in read_process_names(proc).names


def test_names_from_stat_before_linux_2_6_33(tmp_path: Path) -> None:
    proc = copy_fixture("procfs-vms", tmp_path) / "proc"
    for comm in proc.glob("*/comm"):
        comm.unlink()  # no comm file before 2.6.33
    assert read_process_names(proc).names == read_process_names(VMS).names


def test_names_of_a_missing_procfs(tmp_path: Path) -> None:
    names = read_process_names(tmp_path / "nothing")
    assert names.names == {}
    assert names.error == "No such file or directory"


def test_stat_with_spaces_and_parentheses_in_the_name() -> None:
    stat = parse_stat("4242 (a (b) c) S 1 4242 4242 0 -1 4194560 5 0 0 0 7 11 0 0 20 0 1 0 9 0 0")
    assert (stat.comm, stat.flags, stat.utime_ticks, stat.stime_ticks) == (
        "a (b) c",
        4194560,
        7,
        11,
    )
    assert not stat.kernel_thread


def test_stat_that_is_cut_short() -> None:
    with pytest.raises(ValueError, match="fields"):
        parse_stat("1 (x) S 1 1 1 0")
    with pytest.raises(ValueError, match="comm"):
        parse_stat("garbage")


def test_ksmd_is_the_kernel_thread_not_a_namesake() -> None:
    names = read_process_names(VMS)
    stat = read_ksmd_stat(VMS, names)
    assert stat is not None
    assert stat.kernel_thread
    assert (stat.utime_ticks, stat.stime_ticks) == (1234, 566)
    assert cpu_seconds(stat, 100) == 18.0


def test_no_ksmd_without_ksm(tmp_path: Path) -> None:
    proc = copy_fixture("procfs-vms", tmp_path) / "proc"
    names = read_process_names(proc)
    del names.names[37]
    assert read_ksmd_stat(proc, names) is None  # only the user process named ksmd is left


def test_cmdline_and_rss() -> None:
    assert read_cmdline(VMS, 1002) == [
        "qemu-system-x86_64",
        "-enable-kvm",
        "-name",
        "web01",
        "-m",
        "8G",
    ]
    assert read_cmdline(VMS, 37) == []
    assert read_rss_pages(VMS, 1001) == 2097152
    assert read_rss_pages(VMS, 1007) == 0


# --- ksm_stat --------------------------------------------------------------------------


def test_ksm_stat_of_6_18() -> None:
    assert read_process_ksm(VMS, 1001) == ProcessKsm(
        values={
            "ksm_rmap_items": 2100000,
            "ksm_zero_pages": 120,
            "ksm_merging_pages": 1500000,
            "ksm_process_profit": 6010091520,
        },
        flags={"ksm_merge_any": False, "ksm_mergeable": True},
    )


def test_ksm_stat_of_6_1_takes_merging_pages_from_its_own_file() -> None:
    assert read_process_ksm(VMS, 1002) == ProcessKsm(
        values={"ksm_rmap_items": 350000, "ksm_merging_pages": 250000}
    )


def test_ksm_stat_of_6_4_with_a_negative_profit() -> None:
    ksm = read_process_ksm(VMS, 1003)
    assert ksm.values == {
        "ksm_rmap_items": 10,
        "ksm_merging_pages": 0,
        "ksm_process_profit": -640,
    }
    assert ksm.flags == {}


def test_merging_pages_file_alone_of_5_19() -> None:
    assert read_process_ksm(VMS, 1004) == ProcessKsm(values={"ksm_merging_pages": 42})


def test_a_zombie_counts_as_gone() -> None:
    with pytest.raises(ProcessLookupError):
        read_process_ksm(VMS, 1007)


def test_a_process_gone_before_its_ksm_file_was_read(tmp_path: Path) -> None:
    proc = copy_fixture("procfs-vms", tmp_path) / "proc"
    for pid in (1001, 1004):
        (proc / str(pid)).rename(tmp_path / str(pid))
        with pytest.raises(ProcessLookupError):
            read_process_ksm(proc, pid)


def test_a_kernel_without_per_process_files() -> None:
    with pytest.raises(NoKsmFiles):
        read_process_ksm(OLD, 3101)


def test_ksm_stat_lines_of_a_future_kernel_are_kept() -> None:
    ksm = parse_ksm_stat(
        "ksm_rmap_items 5\nksm_pages_sharing 3\nksm_merge_any: yes\na line of another shape\n"
    )
    assert ksm.values == {"ksm_rmap_items": 5, "ksm_pages_sharing": 3}
    assert ksm.flags == {"ksm_merge_any": True}
    assert ksm.merging_pages == 0


def test_ksm_stat_with_a_bad_number() -> None:
    with pytest.raises(ValueError, match="ksm_rmap_items"):
        parse_ksm_stat("ksm_rmap_items many\n")


# --- vmstat ----------------------------------------------------------------------------


def test_vmstat_with_the_ksm_lines() -> None:
    assert read_vmstat(VMS) == {"cow_ksm": 4711, "ksm_swpin_copy": 3}


def test_vmstat_without_them() -> None:
    assert read_vmstat(OLD) == {}


def test_vmstat_with_a_bad_number() -> None:
    with pytest.raises(ValueError, match="cow_ksm"):
        parse_vmstat("cow_ksm lots\n")


# --- qemu -name ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (
            ["qemu-kvm", "-name", "guest=instance-0000001a,debug-threads=on", "-S"],
            "instance-0000001a",
        ),
        (["qemu-system-x86_64", "-name", "web01", "-m", "8G"], "web01"),
        (["qemu-system-x86_64", "--name", "db,,primary,process=qemu:db-primary"], "db,primary"),
        (["qemu", "-name", "debug-threads=on,guest=late"], "late"),
        # Within one -name too a later guest= replaces the earlier (or implied) one.
        (["qemu", "-name", "first,guest=second"], "second"),
        (["qemu", "-name", "guest=first,guest=second"], "second"),
        (["qemu", "-name", ",guest=named"], "named"),
        (["qemu", "-name", "guest=first", "-name", "debug-threads=on"], "first"),
        (["qemu", "-name", "guest=first", "-name", "second"], "second"),
        (["qemu", "-name", "debug-threads=on"], None),
        (["qemu", "-name", ""], None),
        (["qemu", "-name"], None),
        (["qemu", "-m", "2048"], None),
        ([], None),
    ],
)
def test_vm_name(argv: list[str], name: str | None) -> None:
    assert vm_name(argv) == name


def test_option_list_commas() -> None:
    assert split_option_list("a,,b,c=d,,,e") == ["a,b", "c=d,", "e"]
    assert guest_name("guest=,x") is None
