"""What ksmtuned decides from, computed as its script computes it.

Every KSM_MONITOR_INTERVAL seconds ksmtuned (a bash script) does, in kB:

    thres = MemTotal * KSM_THRES_COEF / 100, at least KSM_THRES_CONST
    committed = the memory of the guests, counted as its own script counts it
    free = MemFree + Buffers + Cached
    if committed + thres < MemTotal and free > thres: stop KSM (echo 0 > run)
    else: start KSM (echo 1 > run), boosting pages_to_scan while free < thres

so KSM flaps on and off when free memory hovers around the threshold. The same integer
arithmetic is done here, in kB, and exported in bytes.

How committed is counted differs between distributions (tests/fixtures/ksmtuned/ holds
their real scripts): Fedora sums `ps -o rsz=` over `pgrep '^qemu(-(kvm|system-.+)|
:.{1,11})$'` (process names), Debian over `pgrep -f '^qemu-system.*-enable-kvm'` (whole
command lines: a guest started by libvirt, `/usr/bin/qemu-system-x86_64 ... -accel kvm`,
counts for nothing), Proxmox VE sums `ps -C kvm -o $KSM_PS_METRIC` (pss by default). The
rule applied is the one of the script the running ksmtuned runs (ksmtuned_rule.py); none
when it runs a script of another shape, and none when no ksmtuned runs.

ksmtuned reads ksmtuned.conf and MemTotal once, when it starts: a configuration file
changed since then is not the one in force (config_changed), and ksmtuned's threshold is
then not known. (A change of MemTotal since its start, by memory hotplug, cannot be seen.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ksm_exporter.model.derived import KIB
from ksm_exporter.model.edge_cause import ksmtuned_would_run
from ksm_exporter.model.numbers import U64_MAX
from ksm_exporter.readers.ksmtuned_conf import KsmtunedConfig
from ksm_exporter.readers.ksmtuned_rule import (
    BY_CMDLINE,
    BY_EXACT_NAME,
    KSMTUNED_NAME,
    RSZ,
    CommittedRule,
    KsmtunedProcess,
    RuleLook,
    find_ksmtuned,
    ksmtuned_rule,
)
from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.readers.processes import (
    ProcessNames,
    read_cmdline,
    read_pss_kb,
    read_rss_pages,
    read_vsz_pages,
)
from ksm_exporter.readers.vm_processes import QEMU_PATTERN

__all__ = ["KSMTUNED_NAME"]

# The names a ksmtuned may count (Fedora's pgrep, Proxmox VE's ps -C kvm): the process
# name cache checks these at every scrape.
KSMTUNED_QEMU = re.compile(QEMU_PATTERN)
PROXMOX_QEMU_NAME = "kvm"

# pid -> its command line as pgrep -f matches it (None: empty, a zombie or kernel thread).
CmdlineOf = Callable[[int], Optional[str]]

# The most committed memory there can be: 2^64 bytes (the readers' figures are u64 each).
COMMITTED_MAX_KB = U64_MAX // KIB


def shell_integer(n: int) -> int:
    """bash's arithmetic is intmax_t: a result past 64 bits wraps around, as it does in the
    ksmtuned script (`$[total * KSM_THRES_COEF / 100]` with a huge COEF goes negative)."""
    return (n + 2**63) % 2**64 - 2**63


def shell_divide(a: int, b: int) -> int:
    """bash's $[a / b]: C division, rounding toward zero (Python's // rounds down)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def threshold_kb(total_kb: int, config: KsmtunedConfig) -> int:
    """`thres=$[total * KSM_THRES_COEF / 100]`, then KSM_THRES_CONST if that is greater:
    within bash's signed 64 bits whatever ksmtuned.conf holds (its reader keeps each
    setting in that range)."""
    thres = shell_divide(shell_integer(total_kb * config.KSM_THRES_COEF), 100)
    return max(thres, config.KSM_THRES_CONST)


def free_kb(memory: MemInfo) -> int:
    return (memory.free + memory.buffers + memory.cached) // KIB


def process_kb(procfs: Path, pid: int, ps_metric: str, page_size: int) -> int:
    """What `ps -o <ps_metric>` prints for a process, in kB. Raises OSError or ValueError."""
    if ps_metric == "pss":
        return read_pss_kb(procfs, pid)
    if ps_metric in ("vsz", "vsize"):
        return read_vsz_pages(procfs, pid) * (page_size // KIB)
    return read_rss_pages(procfs, pid) * (page_size // KIB)


def pgrep_f_text(procfs: Path, pid: int) -> str | None:
    """The command line as `pgrep -f` matches it: the arguments joined by spaces; None when
    there is none (a zombie, a kernel thread: never a qemu with -enable-kvm) or it exited."""
    try:
        argv = read_cmdline(procfs, pid)
    except OSError:
        return None
    return " ".join(argv) if argv else None


def selected(
    procfs: Path, names: ProcessNames, rule: CommittedRule, cmdline_of: CmdlineOf | None = None
) -> list[int]:
    """The pids the rule's pgrep or ps -C picks."""
    if rule.select == BY_EXACT_NAME:
        return [pid for pid, name in names.names.items() if name == rule.pattern]
    regex = rule.regex()
    if rule.select == BY_CMDLINE:
        of = cmdline_of or (lambda pid: pgrep_f_text(procfs, pid))
        return [pid for pid in names.names if (text := of(pid)) is not None and regex.search(text)]
    return [pid for pid, name in names.names.items() if regex.search(name)]


def committed_kb(
    procfs: Path,
    names: ProcessNames,
    page_size: int,
    rule: CommittedRule,
    ps_metric: str = "pss",
    cmdline_of: CmdlineOf | None = None,
) -> int:
    """The memory of the processes `rule` counts, in kB as ps prints it: `ps -o rsz=`, or
    `ps_metric` (KSM_PS_METRIC) for Proxmox VE's rule. One that exits meanwhile counts
    for nothing, as with ps. Raises OSError when a PSS could not be read (smaps_rollup
    takes ptrace read access: root, or the process's own user): the sum would be short of
    what ksmtuned, as root, sees. Raises ValueError when the sum passes 2^64 bytes: no
    machine's, so a file lied."""
    metric = RSZ if rule.metric == RSZ else ps_metric
    total = 0
    for pid in selected(procfs, names, rule, cmdline_of):
        try:
            total += process_kb(procfs, pid, metric, page_size)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # exited (a zombie's files are empty)
        except OSError as e:
            if metric != "pss":
                continue  # statm is readable by all: it only fails for a process gone
            raise OSError(e.errno, f"{e.strerror} ({procfs}/{pid}/smaps_rollup)") from e
    if total > COMMITTED_MAX_KB:
        raise ValueError("the qemu processes' memory adds up past 2^64 bytes")
    return total


def boot_time(procfs: Path) -> int | None:
    """btime of <procfs>/stat: when the machine booted, in whole seconds since the epoch."""
    try:
        text = (procfs / "stat").read_text()
    except (OSError, ValueError):
        return None
    for line in text.splitlines():
        if line.startswith("btime "):
            value = line.split()[1]
            return int(value) if value.isdigit() else None
    return None


def config_changed(config_file: Path, procfs: Path, process: KsmtunedProcess) -> bool | None:
    """Whether the configuration file was modified after ksmtuned started (it read the
    file at its start, so it runs with an earlier text); None when that cannot be told
    (no start time or boot time, no file). btime is truncated to the second: only a
    modification more than a second after the start counts, so a file written just
    before ksmtuned was (re)started never does."""
    boot = boot_time(procfs)
    if boot is None or process.start_ticks is None:
        return None
    try:
        modified = os.stat(config_file).st_mtime
    except OSError:
        return None
    started = boot + process.start_ticks / os.sysconf("SC_CLK_TCK")
    return modified > started + 1


def changed_message(config_file: Path, process: KsmtunedProcess) -> str:
    return (
        f"{config_file} changed since ksmtuned started (pid {process.pid}); "
        "restart ksmtuned to apply it"
    )


@dataclass(frozen=True)
class LiveKsmtuned:
    """What the live ksmtuned decides with, as far as it can be told (live_ksmtuned)."""

    process: KsmtunedProcess
    config: KsmtunedConfig | None  # the file's settings; None unless they are in force
    changed: str | None  # the file changed since ksmtuned started (changed_message)
    rule: RuleLook  # its script, and the rule it counts committed memory by (or why none)
    committed_kb: int | None  # None: no rule, or committed_error
    committed_error: OSError | ValueError | None = None  # raised by committed_kb


def live_ksmtuned(
    procfs: Path,
    names: ProcessNames,
    config_file: Path,
    config: KsmtunedConfig | None,
    page_size: int,
    cmdlines: Callable[[], Mapping[int, str | None]] | None = None,
) -> LiveKsmtuned | None:
    """The live ksmtuned (None when none is alive), the configuration it runs with (`config`,
    read from `config_file`, unless the file changed since it started), its script's rule
    and the committed memory by that rule. The scrape's collector and the edges' causes
    both walk this; each says what it lacks its own way. `cmdlines`: the command lines
    as pgrep -f matches them, for a rule that matches them (a cache; else read here)."""
    process = find_ksmtuned(procfs, names)
    if process is None:
        return None
    changed = None
    if config is not None and config_changed(config_file, procfs, process):
        changed, config = changed_message(config_file, process), None
    look = ksmtuned_rule(procfs, process)
    if look.rule is None:
        return LiveKsmtuned(process, config, changed, look, None)
    texts = cmdlines() if cmdlines is not None and look.rule.select == BY_CMDLINE else None
    metric = config.KSM_PS_METRIC if config is not None else "pss"
    try:
        committed = committed_kb(
            procfs, names, page_size, look.rule, metric, None if texts is None else texts.get
        )
    except (OSError, ValueError) as e:
        return LiveKsmtuned(process, config, changed, look, None, e)
    return LiveKsmtuned(process, config, changed, look, committed)


@dataclass(frozen=True)
class KsmtunedInputs:
    """kB, as ksmtuned computes them."""

    total_kb: int
    threshold_kb: int
    committed_kb: int
    free_kb: int

    @property
    def would_run(self) -> bool:
        """False exactly when ksmtuned's next adjustment stops KSM."""
        return ksmtuned_would_run(self.total_kb, self.threshold_kb, self.committed_kb, self.free_kb)


def ksmtuned_inputs(config: KsmtunedConfig, memory: MemInfo, committed: int) -> KsmtunedInputs:
    total = memory.total // KIB
    return KsmtunedInputs(
        total_kb=total,
        threshold_kb=threshold_kb(total, config),
        committed_kb=committed,
        free_kb=free_kb(memory),
    )
