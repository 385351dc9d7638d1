"""ksmtuned's configuration and decision inputs, computed as the ksmtuned script does."""

from __future__ import annotations

from pathlib import Path

import pytest

from ksm_exporter.collectors.registry import process_name_cache
from ksm_exporter.readers.ksmtuned import (
    committed_kb,
    ksmtuned_alive,
    ksmtuned_inputs,
    shell_divide,
    threshold_kb,
)
from ksm_exporter.readers.ksmtuned_conf import (
    KsmtunedConfig,
    parse_ksmtuned_conf,
    read_ksmtuned_conf,
)
from ksm_exporter.readers.meminfo import MemInfo, read_meminfo
from ksm_exporter.readers.processes import ProcessNames, read_process_names
from ksm_exporter.readers.shell_assignments import shell_words
from tests.support import FIXTURES
from tests.support.collect import collector, scrape
from tests.support.fake_procfs import write_process

CONFS = FIXTURES / "ksmtuned"
VMS = FIXTURES / "procfs-vms" / "proc"

DEFAULTS = KsmtunedConfig(
    KSM_THRES_COEF=20,
    KSM_THRES_CONST=2048,
    KSM_NPAGES_BOOST=300,
    KSM_NPAGES_DECAY=-50,
    KSM_NPAGES_MIN=64,
    KSM_NPAGES_MAX=1250,
    KSM_SLEEP_MSEC=10,
    KSM_MONITOR_INTERVAL=60,
)


def test_defaults_are_ksmtuneds() -> None:
    assert KsmtunedConfig() == DEFAULTS


def test_absent_file_is_no_configuration(tmp_path: Path) -> None:
    # ksmtuned itself would run with its defaults, but the exporter may see another /etc:
    # which settings apply cannot be told.
    assert read_ksmtuned_conf(tmp_path / "ksmtuned.conf") is None
    (tmp_path / "ksmtuned.conf").symlink_to(tmp_path / "nowhere")
    assert read_ksmtuned_conf(tmp_path / "ksmtuned.conf") is None


def test_stock_file_sets_nothing() -> None:
    assert read_ksmtuned_conf(CONFS / "stock.conf") == (DEFAULTS, [])


def test_tuned_file() -> None:
    config, errors = read_ksmtuned_conf(CONFS / "tuned.conf")
    assert errors == []
    assert config == KsmtunedConfig(
        KSM_THRES_COEF=35,  # the last of two assignments
        KSM_THRES_CONST=4096,  # 4\096: a backslash quotes the 0
        KSM_NPAGES_BOOST=600,
        KSM_NPAGES_DECAY=-100,
        KSM_NPAGES_MIN=64,  # empty: ${KSM_NPAGES_MIN:-64}
        KSM_NPAGES_MAX=1250,  # `KSM_NPAGES_MAX = 5000` is a command
        KSM_SLEEP_MSEC=20,
        KSM_MONITOR_INTERVAL=30,
    )


def test_broken_file_keeps_the_defaults_of_what_is_wrong() -> None:
    config, errors = read_ksmtuned_conf(CONFS / "broken.conf")
    assert config == KsmtunedConfig(KSM_SLEEP_MSEC=15)  # line 5, after the open quote: unread
    assert errors == [
        'line 4: no closing quote ("); the rest of the file is ignored, as by bash',
        "KSM_THRES_COEF: not a decimal integer: 'twenty'; using the default",
        "KSM_NPAGES_MAX: not a decimal integer: '0x400'; using the default",
    ]


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "ksmtuned.conf").mkdir()
    with pytest.raises(IsADirectoryError):
        read_ksmtuned_conf(tmp_path / "ksmtuned.conf")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('A=1 B=\'two words\' C="x\\"y"  # comment', ["A=1", "B=two words", 'C=x"y']),
        ("A=a#b", ["A=a#b"]),  # a # inside a word is no comment
        ("A='it''s'", ["A=its"]),
        ('A="$HOME\\$"', ["A=$HOME$"]),  # no expansion: no ksmtuned setting needs it
        ("   # only a comment", []),
        ("", []),
        ("A=\\", ["A="]),
    ],
)
def test_shell_words(line: str, words: list[str]) -> None:
    assert shell_words(line) == words


def test_assignments_only_lines() -> None:
    config, errors = parse_ksmtuned_conf(
        "KSM_THRES_COEF=30 KSM_THRES_CONST=100\n"
        "KSM_NPAGES_MIN=1 true\n"
        "export\n"
        "export KSM_SLEEP_MSEC=5\n"
    )
    assert errors == []
    # `NAME=value command` sets NAME for the command only.
    assert config == KsmtunedConfig(KSM_THRES_COEF=30, KSM_THRES_CONST=100, KSM_SLEEP_MSEC=5)


# --- the decision ----------------------------------------------------------------------


def test_shell_division_rounds_toward_zero() -> None:
    assert [shell_divide(7, 2), shell_divide(-7, 2), shell_divide(7, -2), shell_divide(-7, -2)] == [
        3,
        -3,
        -3,
        3,
    ]


def test_threshold() -> None:
    assert threshold_kb(32831212, DEFAULTS) == 6566242  # 656624240 / 100, the rest dropped
    assert threshold_kb(8000, DEFAULTS) == 2048  # KSM_THRES_CONST is the floor
    assert threshold_kb(32831212, KsmtunedConfig(KSM_THRES_COEF=35)) == 11490924


def memory_kb(total: int, free: int, buffers: int = 0, cached: int = 0) -> MemInfo:
    return MemInfo(
        total=total * 1024, free=free * 1024, buffers=buffers * 1024, cached=cached * 1024
    )


@pytest.mark.parametrize(
    ("committed", "free", "would_run"),
    [
        (700000, 250000, False),  # 900000 < 1000000 and 250000 > 200000: ksmtuned stops KSM
        (700000, 200000, True),  # free not above the threshold
        (700000, 199999, True),
        (800000, 250000, True),  # 1000000 is not below MemTotal
        (799999, 250000, False),
    ],
)
def test_would_run(committed: int, free: int, would_run: bool) -> None:
    inputs = ksmtuned_inputs(DEFAULTS, memory_kb(1000000, free - 300, 100, 200), committed)
    assert (inputs.total_kb, inputs.threshold_kb, inputs.free_kb) == (1000000, 200000, free)
    assert inputs.would_run is would_run


def test_inputs_on_the_compute_node_fixture() -> None:
    names = read_process_names(VMS)
    # pids 1001-1005 and the zombie 1007; not qemu-img, qemu-ga.
    assert committed_kb(VMS, names, 4096) == (3 * 2097152 + 524288 + 1000) * 4
    inputs = ksmtuned_inputs(DEFAULTS, read_meminfo(VMS), committed_kb(VMS, names, 4096))
    assert inputs.total_kb == 32831212
    assert inputs.threshold_kb == 6566242
    assert inputs.free_kb == 4194304 + 204800 + 3145728
    assert inputs.committed_kb == 27266976
    # Free memory is above the threshold, but qemu's memory plus the threshold is more
    # than MemTotal: ksmtuned keeps KSM running.
    assert inputs.would_run is True
    assert ksmtuned_alive(names) is True


def test_committed_ignores_a_process_gone_meanwhile() -> None:
    names = ProcessNames(names={1001: "qemu-kvm", 4444: "qemu-kvm"})
    assert committed_kb(VMS, names, 4096) == 2097152 * 4


def test_no_ksmtuned() -> None:
    assert ksmtuned_alive(ProcessNames(names={1: "systemd", 2: "ksmtuned-helper"})) is False


# --- Proxmox VE's ksmtuned (ksm-control-daemon): ps -C kvm -o $KSM_PS_METRIC -----------


def proxmox_node(root: Path) -> Path:
    """A kvm guest (PSS 300000 kB, 200000 resident pages), a qemu-kvm one (1000 pages),
    and a kernel thread named kvm."""
    proc = root / "proc"
    write_process(proc, 1, "systemd", cmdline=["/sbin/init"])  # a complete process table
    kvm = write_process(proc, 500, "kvm", cmdline=["/usr/bin/kvm", "-id", "100"], rss_pages=200000)
    (kvm / "smaps_rollup").write_text(
        "5586a000-7ffd9000 ---p 00000000 00:00 0   [rollup]\n"
        "Rss:              800000 kB\nPss:              300000 kB\nPss_Anon:         290000 kB\n"
    )
    write_process(proc, 501, "qemu-kvm", cmdline=["/usr/libexec/qemu-kvm"], rss_pages=1000)
    write_process(proc, 9, "kvm", kernel_thread=True)  # no smaps_rollup line: 0, as ps says
    (proc / "9" / "smaps_rollup").write_text("")
    return proc


@pytest.mark.parametrize(
    ("metric", "kb"),
    [("pss", 300000 + 4000), ("rsz", 800000 + 4000), ("vsz", 804000 + 4000)],
)
def test_committed_as_proxmox_counts_kvm(tmp_path: Path, metric: str, kb: int) -> None:
    proc = proxmox_node(tmp_path)
    assert committed_kb(proc, read_process_names(proc), 4096, metric) == kb


def test_committed_unknown_when_a_kvm_pss_is_unreadable(tmp_path: Path) -> None:
    proc = proxmox_node(tmp_path)
    (proc / "500" / "smaps_rollup").unlink()
    (proc / "500" / "smaps_rollup").mkdir()  # EISDIR: readable by nobody, as EACCES
    with pytest.raises(OSError, match="smaps_rollup"):
        committed_kb(proc, read_process_names(proc), 4096)
    c = collector(proc, config=CONFS / "stock.conf")
    samples = scrape(c)
    assert "ksmtuned_committed_bytes" not in samples
    assert "ksmtuned_would_run" not in samples
    assert c.read_errors.counts() == {"smaps_rollup": 1, "meminfo": 1}  # no meminfo here
    # The rest of ksmtuned's inputs do not depend on it.
    assert samples["ksmtuned_running"] == 0


def test_ps_metric_from_the_configuration() -> None:
    config, errors = parse_ksmtuned_conf("KSM_PS_METRIC=rsz\n")
    assert (config.KSM_PS_METRIC, errors) == ("rsz", [])
    config, errors = parse_ksmtuned_conf("KSM_PS_METRIC=rss_anon\n")
    assert config.KSM_PS_METRIC == "pss"
    assert errors == ["KSM_PS_METRIC: not one of pss, rss, rsz, rssize, vsz, vsize: 'rss_anon'"]


def test_kvm_names_are_checked_at_every_scrape_whatever_the_pattern(tmp_path: Path) -> None:
    # ksmtuned's count needs them, even when --collector.process.pattern leaves them out.
    matters = process_name_cache(None).matters
    assert matters("kvm") and matters("qemu-kvm")
    assert not matters("kvm-pit/500")
