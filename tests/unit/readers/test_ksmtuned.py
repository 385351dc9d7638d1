"""ksmtuned's configuration and decision inputs, computed as the ksmtuned script does."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ksm_exporter.collectors.registry import process_name_cache
from ksm_exporter.model.qemu import VmIdentity, vm_identity
from ksm_exporter.readers.ksmtuned import (
    committed_kb,
    config_changed,
    ksmtuned_inputs,
    shell_divide,
    threshold_kb,
)
from ksm_exporter.readers.ksmtuned_conf import (
    KsmtunedConfig,
    parse_ksmtuned_conf,
    read_ksmtuned_conf,
)
from ksm_exporter.readers.ksmtuned_rule import (
    DEBIAN,
    FEDORA,
    PROXMOX,
    CommittedRule,
    KsmtunedProcess,
    find_ksmtuned,
    ksmtuned_rule,
    recognise,
    script_path,
)
from ksm_exporter.readers.meminfo import MemInfo, read_meminfo
from ksm_exporter.readers.processes import ProcessNames, read_process_names
from ksm_exporter.readers.shell_assignments import shell_words
from tests.support import FIXTURES
from tests.support.collect import Scrapes, collector, scrape
from tests.support.fake_procfs import write_ksmtuned_script, write_meminfo, write_process
from tests.support.ksmtuned_scripts import EDITS, derived

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
        "KSM_THRES_COEF: not an integer in bash's arithmetic: 'twenty'; using the default",
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


# ksmtuned's own lines (its script, as in the ksm-control-scripts of qemu-kvm and Proxmox
# VE's ksm-control-daemon), run by the real bash: its 64-bit arithmetic wraps around.
KSMTUNED_THRESHOLD = """thres=$[total * KSM_THRES_COEF / 100]
if [ $KSM_THRES_CONST -gt $thres ]; then
    thres=$KSM_THRES_CONST
fi
echo $thres"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash to compare with")
@settings(max_examples=40, deadline=None)
@given(
    total=st.integers(0, 2**64 // 1024) | st.integers(0, 2**30),
    coef=st.integers(-(2**63) + 1, 2**63 - 1) | st.integers(-200, 200),
    const=st.integers(-(2**63) + 1, 2**63 - 1) | st.integers(-(2**24), 2**24),
)
def test_threshold_is_bashs_whatever_the_settings(total: int, coef: int, const: int) -> None:
    """A huge or negative KSM_THRES_COEF or CONST gives the threshold ksmtuned computes
    (so every edge's threshold stays within signed 64 bits of kB: state/transitions.py)."""
    env = {"total": str(total), "KSM_THRES_COEF": str(coef), "KSM_THRES_CONST": str(const)}
    bash = subprocess.run(
        ["bash", "-c", KSMTUNED_THRESHOLD], env=env, capture_output=True, text=True, check=True
    )
    config = KsmtunedConfig(KSM_THRES_COEF=coef, KSM_THRES_CONST=const)
    assert threshold_kb(total, config) == int(bash.stdout)


def script_threshold_lines() -> str:
    """The lines of Debian's ksmtuned (as its package ships it) that fill in the two
    settings' defaults and compute the threshold from them and MemTotal ($total)."""
    lines = (CONFS / "debian-ksmtuned").read_text().splitlines()
    defaults = lines.index("KSM_THRES_COEF=${KSM_THRES_COEF:-20}")
    threshold = lines.index("thres=$[total * KSM_THRES_COEF / 100]")
    picked = lines[defaults : defaults + 2] + lines[threshold : threshold + 4]
    assert picked[-1] == "fi", picked
    return "\n".join(picked) + "\necho $thres\n"


# Numbers as a ksmtuned.conf may hold them: decimal, with a leading 0 (octal in bash's
# arithmetic, and 08 no number there), hexadecimal, signed.
CONF_NUMBER = st.from_regex(r"\A[+-]?(0[0-9]{0,4}|0[xX][0-9a-fA-F]{1,4}|[1-9][0-9]{0,6})\Z")


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash to compare with")
@settings(max_examples=60, deadline=None)
@given(total=st.integers(0, 2**40), coef=CONF_NUMBER, const=CONF_NUMBER)
def test_settings_are_read_as_the_script_reads_them(total: int, coef: str, const: str) -> None:
    """KSM_THRES_COEF in the script's `$[...]` (010 is 8 percent, 0x10 16, 08 an error),
    KSM_THRES_CONST in its `[ -gt ]` (010 is 10, 0x10 an error): a value the reader
    takes gives ksmtuned's threshold; one it rejects makes the script's lines fail."""
    conf = f"KSM_THRES_COEF={coef}\nKSM_THRES_CONST={const}\n"
    bash = subprocess.run(
        ["bash", "-c", conf + script_threshold_lines()],
        env={"total": str(total)},
        capture_output=True,
        text=True,
    )
    config, errors = parse_ksmtuned_conf(conf)
    if errors:
        assert bash.stderr, (errors, bash.stdout)
    else:
        assert bash.stderr == ""
        assert threshold_kb(total, config) == int(bash.stdout)


def test_leading_zeros_as_bash_reads_them() -> None:
    config, errors = parse_ksmtuned_conf(
        "KSM_THRES_COEF=010\nKSM_THRES_CONST=010\nKSM_NPAGES_BOOST=0x20\nKSM_SLEEP_MSEC=09\n"
    )
    assert (config.KSM_THRES_COEF, config.KSM_THRES_CONST, config.KSM_NPAGES_BOOST) == (8, 10, 32)
    assert errors == [
        "KSM_SLEEP_MSEC: not an integer in bash's arithmetic: '09'; using the default"
    ]


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
    ksmtuned = find_ksmtuned(VMS, names)
    assert ksmtuned is not None and ksmtuned.pid == 812
    look = ksmtuned_rule(VMS, ksmtuned)  # its /usr/sbin/ksmtuned is Fedora's
    assert (look.rule, look.problem, look.script) == (FEDORA, None, "/usr/sbin/ksmtuned")
    # pids 1001-1005 and the zombie 1007 by name; not qemu-img, qemu-ga.
    assert committed_kb(VMS, names, 4096, FEDORA) == (3 * 2097152 + 524288 + 1000) * 4
    inputs = ksmtuned_inputs(DEFAULTS, read_meminfo(VMS), committed_kb(VMS, names, 4096, FEDORA))
    assert inputs.total_kb == 32831212
    assert inputs.threshold_kb == 6566242
    assert inputs.free_kb == 4194304 + 204800 + 3145728
    assert inputs.committed_kb == 27266976
    # Free memory is above the threshold, but qemu's memory plus the threshold is more
    # than MemTotal: ksmtuned keeps KSM running.
    assert inputs.would_run is True


def test_debian_counts_whole_command_lines_with_enable_kvm() -> None:
    # Only 1002 was started as `qemu-system-x86_64 -enable-kvm`: not libvirt's
    # /usr/libexec/qemu-kvm, not 1003 (no -enable-kvm), whatever their names.
    names = read_process_names(VMS)
    assert committed_kb(VMS, names, 4096, DEBIAN) == 2097152 * 4


def test_a_guest_started_by_libvirt_counts_for_debian_not_at_all() -> None:
    # The real command line of a guest a real libvirtd started (tests/fixtures/cmdlines/):
    # /usr/bin/qemu-system-x86_64 ..., no -enable-kvm. Fedora's pgrep finds it by name.
    lines = (FIXTURES / "cmdlines" / "libvirt-debian12.txt").read_text().splitlines()
    argv = [line for line in lines if not line.startswith("#")]
    assert not DEBIAN.regex().search(" ".join(argv))
    assert DEBIAN.regex().search("qemu-system-x86_64 -enable-kvm -m 64 -S")
    assert FEDORA.regex().search("qemu-system-x86")  # its process name
    # And the per-VM labels it gives.
    assert vm_identity(argv, "qemu-system-x86") == VmIdentity(
        "ksm-exporter-test-libvirt", uuid="6f1c2b9e-3d4a-4e5f-8a7b-9c0d1e2f3a4b"
    )


def test_committed_ignores_a_process_gone_meanwhile() -> None:
    names = ProcessNames(names={1001: "qemu-kvm", 4444: "qemu-kvm"})
    assert committed_kb(VMS, names, 4096, FEDORA) == 2097152 * 4


# --- which ksmtuned runs, and its own rule ---------------------------------------------


SCRIPTS = FIXTURES / "ksmtuned"


@pytest.mark.parametrize(
    ("variant", "rule", "words"),
    [
        ("fedora", FEDORA, "pgrep '^qemu(-(kvm|system-.+)|:.{1,11})$' | ps -o rsz="),
        ("debian", DEBIAN, "pgrep -f '^qemu-system.*-enable-kvm' | ps -o rsz="),
        ("proxmox", PROXMOX, "ps -C kvm -o $KSM_PS_METRIC"),
    ],
)
def test_the_real_scripts_are_recognised(variant: str, rule: CommittedRule, words: str) -> None:
    found = recognise((SCRIPTS / f"{variant}-ksmtuned").read_text())
    assert found == rule
    assert (found.variant, found.words) == (variant, words)


@pytest.mark.parametrize("variant", sorted(EDITS))
def test_the_derived_scripts_are_debians_with_the_documented_edits(variant: str) -> None:
    """fedora-ksmtuned and proxmox-ksmtuned are Debian's script with the lines that
    differ upstream replaced (tests/support/ksmtuned_scripts.py), kept in sync."""
    assert (SCRIPTS / f"{variant}-ksmtuned").read_text() == derived(variant)


def replaced(variant: str, old: str, new: str) -> str:
    text = (SCRIPTS / f"{variant}-ksmtuned").read_text()
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("#!/bin/sh\necho 1 > /sys/kernel/mm/ksm/run\n", "no line `KSM_THRES_COEF="),
        (replaced("debian", "-o rsz=", "-o vsz="), "counts processes in a way not known"),
        (replaced("fedora", "pgrep -d ' ' --", "pgrep -u qemu -d ' ' --"), "not known"),
        (replaced("debian", "pgrep -f -d ' '", "pgrep -f"), "pgrep -f: not one list of pids"),
        (replaced("fedora", "'^qemu(", "'^[q]emu("), "not known"),  # a bracket: not ERE-safe
        (replaced("proxmox", "{free += $2}", "{free += $3}"), "MemFree + Buffers + Cached"),
        (replaced("fedora", "-lt $total -a", "-le $total -a"), "no line `if [ $[committed"),
        (replaced("proxmox", "KSM_PS_METRIC=${KSM_PS_METRIC:-pss}", ""), "without the line"),
    ],
)
def test_another_script_has_no_rule(script: str, why: str) -> None:
    found = recognise(script)
    assert isinstance(found, str) and why in found


def test_a_rule_of_the_same_shape_is_applied_as_written() -> None:
    # Another pattern in Debian's shape is that pattern, by command line; it names no
    # distribution. (The ksm-control-scripts original counted `ps -C qemu-kvm -o rsz`.)
    rule = recognise(replaced("debian", "'^qemu-system.*-enable-kvm'", "'qemu.*-accel kvm'"))
    assert isinstance(rule, CommittedRule)
    assert (rule.select, rule.pattern, rule.variant) == ("pgrep -f", "qemu.*-accel kvm", "")
    rule = recognise(
        replaced("proxmox", '-o "$KSM_PS_METRIC"', "-o rsz").replace("-:kvm}", "-:qemu-kvm}")
    )
    assert isinstance(rule, CommittedRule) and rule.words == "ps -C kvm -o rsz"


def test_pgrep_regex_is_posix_extended() -> None:
    regex = FEDORA.regex()
    assert regex.search("qemu-system-x86") and regex.search("qemu:db-primary")
    assert not regex.search("qemu-kvm\n")  # $ is the very end, as regexec's
    assert not regex.search("qemu:a-name-of-12")  # at most 11 after qemu: (comm is 15)
    assert DEBIAN.regex().search("qemu-system-x86_64 -name a\nb -enable-kvm")  # . spans \n


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (("/bin/bash", "/usr/sbin/ksmtuned"), "/usr/sbin/ksmtuned"),  # how the kernel runs #!
        (("bash", "-x", "./ksmtuned"), "./ksmtuned"),
        (("/usr/sbin/ksmtuned",), "/usr/sbin/ksmtuned"),
        (("/bin/bash",), None),
        ((), None),
    ],
)
def test_script_path(argv: tuple[str, ...], path: str | None) -> None:
    assert script_path(argv) == path


def ksmtuned_tree(root: Path, *processes: tuple[int, str, int]) -> Path:
    """ksmtuned processes (pid, state, start ticks) running Debian's script."""
    proc = root / "proc"
    write_process(proc, 1, "systemd", cmdline=["/sbin/init"])
    for pid, state, start in processes:
        d = write_process(proc, pid, "ksmtuned", cmdline=["/bin/bash", "/usr/sbin/ksmtuned"])
        fields = (d / "stat").read_text().split(" ")
        fields[2], fields[21] = state, str(start)
        (d / "stat").write_text(" ".join(fields))
        write_ksmtuned_script(proc, pid, "debian")
    return proc


def test_the_oldest_live_ksmtuned_runs(tmp_path: Path) -> None:
    # The loop forked at start, and a subshell of one of its looks (same name, later).
    proc = ksmtuned_tree(tmp_path, (700, "S", 5000), (731, "S", 900000), (650, "Z", 100))
    found = find_ksmtuned(proc, read_process_names(proc))
    assert found == KsmtunedProcess(700, 5000, ("/bin/bash", "/usr/sbin/ksmtuned"))
    assert ksmtuned_rule(proc, found).rule == DEBIAN


@pytest.mark.parametrize("state", ["Z", "X"])
def test_a_zombie_ksmtuned_is_not_running(tmp_path: Path, state: str) -> None:
    proc = ksmtuned_tree(tmp_path, (700, state, 5000))
    assert find_ksmtuned(proc, read_process_names(proc)) is None


def test_an_unreadable_script_is_no_rule(tmp_path: Path) -> None:
    proc = ksmtuned_tree(tmp_path, (700, "S", 5000))
    (proc / "700" / "root" / "usr" / "sbin" / "ksmtuned").unlink()
    process = find_ksmtuned(proc, read_process_names(proc))
    assert process is not None
    look = ksmtuned_rule(proc, process)
    assert look.rule is None
    assert look.problem == "cannot read /usr/sbin/ksmtuned: No such file or directory"


# --- the configuration in force: read once, when ksmtuned started ----------------------


def test_configuration_changed_since_ksmtuned_started(tmp_path: Path) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    proc = ksmtuned_tree(tmp_path, (700, "S", 50 * hz))  # started 50 s after boot
    (proc / "stat").write_text("cpu  1 2 3 4\nbtime 1700000000\nprocesses 9\n")
    process = find_ksmtuned(proc, read_process_names(proc))
    assert process is not None
    conf = tmp_path / "ksmtuned.conf"
    conf.write_text("KSM_THRES_COEF=30\n")
    for modified, changed in ((1700000040, False), (1700000051, False), (1700000051.5, True)):
        os.utime(conf, (modified, modified))
        assert config_changed(conf, proc, process) is changed, modified
    (proc / "stat").write_text("cpu  1 2 3 4\n")  # no boot time: cannot be told
    assert config_changed(conf, proc, process) is None


# --- Proxmox VE's ksmtuned (ksm-control-daemon): ps -C kvm -o $KSM_PS_METRIC -----------


def proxmox_node(root: Path) -> Path:
    """A kvm guest (PSS 300000 kB, 200000 resident pages), a qemu-kvm one (1000 pages: not
    counted, only kvm is), and a kernel thread named kvm."""
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
    [("pss", 300000), ("rsz", 800000), ("vsz", 804000)],
)
def test_committed_as_proxmox_counts_kvm(tmp_path: Path, metric: str, kb: int) -> None:
    proc = proxmox_node(tmp_path)
    assert committed_kb(proc, read_process_names(proc), 4096, PROXMOX, metric) == kb


def test_committed_unknown_when_a_kvm_pss_is_unreadable(tmp_path: Path) -> None:
    proc = proxmox_node(tmp_path)
    (proc / "500" / "smaps_rollup").unlink()
    (proc / "500" / "smaps_rollup").mkdir()  # EISDIR: readable by nobody, as EACCES
    with pytest.raises(OSError, match="smaps_rollup"):
        committed_kb(proc, read_process_names(proc), 4096, PROXMOX)
    write_process(proc, 77, "ksmtuned", cmdline=["/bin/bash", "/usr/sbin/ksmtuned"])
    write_ksmtuned_script(proc, 77, "proxmox")
    c = collector(proc, config=CONFS / "stock.conf")
    samples = scrape(c)
    assert "ksmtuned_committed_bytes" not in samples
    assert "ksmtuned_would_run" not in samples
    assert c.read_errors.counts() == {"smaps_rollup": 1, "meminfo": 1}  # no meminfo here
    # The rest of ksmtuned's inputs do not depend on it.
    assert samples["ksmtuned_running"] == 1


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


# --- the collector: the rule in force, said once ----------------------------------------


def debian_node(root: Path, state: str = "S") -> Path:
    """Debian's ksmtuned; a guest started by hand with -enable-kvm (counted) and one as
    libvirt starts it (not counted); 1 GB of 10 GB free."""
    proc = root / "proc"
    write_process(proc, 1, "systemd", cmdline=["/sbin/init"])
    write_meminfo(proc, total_kb=10 * 2**20, free_kb=2**20)
    write_process(proc, 700, "ksmtuned", cmdline=["/bin/bash", "/usr/sbin/ksmtuned"], state=state)
    write_ksmtuned_script(proc, 700, "debian")
    by_hand = ["qemu-system-x86_64", "-enable-kvm", "-m", "256", "-S"]
    write_process(proc, 800, "qemu-system-x86", cmdline=by_hand, rss_pages=25600)
    libvirt = ["/usr/bin/qemu-system-x86_64", "-name", "guest=g,debug-threads=on", "-accel", "kvm"]
    write_process(proc, 801, "qemu-system-x86", cmdline=libvirt, rss_pages=51200)
    return proc


def logged(c: Scrapes, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    c.read_errors.notices.flush()
    return [r.getMessage() for r in caplog.records if r.name.endswith("collectors.ksmtuned")]


DEBIAN_INFO = (
    "ksmtuned_committed_rule_info{rule=\"pgrep -f '^qemu-system.*-enable-kvm' | ps -o rsz=\","
    'script="/usr/sbin/ksmtuned",variant="debian"}'
)


def test_the_running_ksmtuneds_rule_is_exported_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    c = collector(debian_node(tmp_path), pattern=None)
    samples = scrape(c)
    assert samples[DEBIAN_INFO] == 1
    assert samples["ksmtuned_committed_bytes"] == 25600 * 4096  # the -enable-kvm one only
    assert samples["ksmtuned_would_run"] == 1  # 1 GB free is under the 2 GB threshold
    assert c.last["ksmtuned"].missing is None
    assert logged(c, caplog) == [
        "ksmtuned (pid 700) runs /usr/sbin/ksmtuned: committed memory is "
        "pgrep -f '^qemu-system.*-enable-kvm' | ps -o rsz= (debian's ksmtuned)"
    ]
    scrape(c)
    assert logged(c, caplog) == []


def test_an_unrecognised_script_leaves_committed_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = debian_node(tmp_path)
    script = proc / "700" / "root" / "usr" / "sbin" / "ksmtuned"
    script.write_text(script.read_text().replace("pgrep -f -d ' '", "pgrep -i -f -d ' '"))
    c = collector(proc, pattern=None)
    samples = scrape(c)
    for name in ("ksmtuned_committed_bytes", "ksmtuned_would_run", DEBIAN_INFO):
        assert name not in samples
    assert samples["ksmtuned_running"] == 1 and samples["ksmtuned_threshold_bytes"] > 0
    why = (
        "ksmtuned (pid 700): /usr/sbin/ksmtuned: not recognised: committed_memory() counts "
        "processes in a way not known here; its committed memory is unknown"
    )
    assert c.last["ksmtuned"].missing == why
    scrape(c)
    assert logged(c, caplog) == [why]


def test_a_zombie_ksmtuned_is_not_running_in_the_metrics(tmp_path: Path) -> None:
    c = collector(debian_node(tmp_path, state="Z"), pattern=None)
    samples = scrape(c)
    assert samples["ksmtuned_running"] == 0
    assert "ksmtuned_committed_bytes" not in samples and DEBIAN_INFO not in samples


def test_a_configuration_changed_since_start_leaves_the_threshold_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = debian_node(tmp_path)
    (proc / "stat").write_text("cpu  1 2 3 4\nbtime 1700000000\n")  # started at +100 ticks
    conf = tmp_path / "ksmtuned.conf"
    conf.write_text("KSM_THRES_COEF=30\n")
    os.utime(conf, (1700000000, 1700000000))
    c = collector(proc, pattern=None, config=conf)
    assert scrape(c)["ksmtuned_threshold_bytes"] == 3 * 2**20 * 1024
    os.utime(conf, (1700000100, 1700000100))  # edited later, ksmtuned not restarted
    samples = scrape(c)
    assert "ksmtuned_threshold_bytes" not in samples and "ksmtuned_would_run" not in samples
    assert samples["ksmtuned_committed_bytes"] == 25600 * 4096
    why = f"{conf} changed since ksmtuned started (pid 700); restart ksmtuned to apply it"
    assert c.last["ksmtuned"].missing == why
    scrape(c)
    assert logged(c, caplog) == [why]


def test_debian_rule_reads_a_command_line_again_after_an_exec(tmp_path: Path) -> None:
    # libvirt forks (the child named libvirtd), then execs qemu in the same pid: the
    # command line read before the exec is read again once the name changes.
    proc = debian_node(tmp_path)
    write_process(proc, 802, "libvirtd", cmdline=["/usr/sbin/libvirtd"], rss_pages=2560)
    c = collector(proc, pattern=None)
    assert scrape(c)["ksmtuned_committed_bytes"] == 25600 * 4096
    (proc / "802" / "comm").write_text("qemu-system-x86\n")
    argv = ["qemu-system-x86_64", "-enable-kvm", "-S"]
    (proc / "802" / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
    assert scrape(c)["ksmtuned_committed_bytes"] == (25600 + 2560) * 4096
