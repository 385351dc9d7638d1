"""Which ksmtuned runs, and how its own script counts committed memory.

ksmtuned is a bash script, and each distribution changed how it counts the memory
committed to guests (tests/fixtures/ksmtuned/: Debian's script, and Fedora's and Proxmox
VE's as Debian's with the lines that differ upstream, sources noted):

- Fedora: `pgrep -d ' ' -- '^qemu(-(kvm|system-.+)|:.{1,11})$'`, the process name
  (qemu-kvm, qemu-system-x86, qemu:NAME), then the sum of `ps -p "$pidlist" -o rsz=`;
- Debian: `pgrep -f -d ' ' '^qemu-system.*-enable-kvm'`, the whole command line: only a
  guest started as `qemu-system-... -enable-kvm` counts (not `/usr/bin/qemu-system-x86_64`,
  not libvirt's `-accel kvm`), then the sum of `ps -p "$pidlist" -o rsz=`;
- Proxmox VE (ksm-control-daemon): `ps -C kvm -o "$KSM_PS_METRIC"`, the processes named
  exactly kvm (qemu-server's guests), KSM_PS_METRIC (default pss) summed.

So the rule is read from the script of the ksmtuned that runs (its path from its command
line, read through /proc/PID/root: the file it runs, also in a container) and recognised
by shape; a script of another shape has no rule here, and nothing is guessed for it.
The rest of the decision is the same in all three and is checked to be there: free =
MemFree + Buffers + Cached, thres = MemTotal * KSM_THRES_COEF / 100 at least
KSM_THRES_CONST, stop when committed + thres < total and free > thres.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ksm_exporter.readers import describe_error, read_regular_file
from ksm_exporter.readers.processes import ProcessNames, read_cmdline, read_stat

# ksmtuned runs as a script, so its process name is the script's file name.
KSMTUNED_NAME = "ksmtuned"

MAX_SCRIPT_BYTES = 64 * 1024

# How committed_memory() picks its processes.
BY_NAME = "pgrep"  # pgrep PATTERN: an extended regular expression on the process name
BY_CMDLINE = "pgrep -f"  # pgrep -f PATTERN: on the command line, arguments joined by spaces
BY_EXACT_NAME = "ps -C"  # ps -C NAME: the process name, exactly
# What it sums: ps's rsz, or the ps field KSM_PS_METRIC of ksmtuned.conf names.
RSZ = "rsz"
CONF_METRIC = "$KSM_PS_METRIC"


@dataclass(frozen=True)
class CommittedRule:
    select: str  # BY_NAME, BY_CMDLINE or BY_EXACT_NAME
    pattern: str  # the regular expression, or the exact name
    metric: str  # RSZ or CONF_METRIC

    @property
    def variant(self) -> str:
        """The distribution whose script counts this way (fixtures), or "" for none."""
        return VARIANTS.get(self, "")

    @property
    def words(self) -> str:
        """The rule as the script says it: `pgrep -f '^qemu-system.*-enable-kvm' | ps -o rsz=`."""
        if self.select == BY_EXACT_NAME:
            return f"ps -C {self.pattern} -o {self.metric}"
        return f"{self.select} '{self.pattern}' | ps -o {self.metric}="

    def regex(self) -> re.Pattern[str]:
        """pgrep's regex (POSIX ERE, regexec without REG_NEWLINE) in Python's terms: `.`
        matches a newline too, `$` only the very end. The patterns recognised hold no
        backslash or bracket (_PATTERN), where the two dialects would differ."""
        return re.compile(self.pattern.replace("$", r"\Z"), re.DOTALL)


FEDORA = CommittedRule(BY_NAME, "^qemu(-(kvm|system-.+)|:.{1,11})$", RSZ)
DEBIAN = CommittedRule(BY_CMDLINE, "^qemu-system.*-enable-kvm", RSZ)
PROXMOX = CommittedRule(BY_EXACT_NAME, "kvm", CONF_METRIC)
VARIANTS = {FEDORA: "fedora", DEBIAN: "debian", PROXMOX: "proxmox"}

# An ERE whose meaning Python's re shares: no backslash, bracket or POSIX class.
_PATTERN = r"[A-Za-z0-9_.:^$()|*+?{},=/ -]+"
_PGREP = re.compile(
    r"local pidlist\n"
    rf"pidlist=\$\(pgrep (?P<options>(?:(?:-f|-d ' '|--) )+)'(?P<pattern>{_PATTERN})'\)\n"
    r'if \[ -n "\$pidlist" \]; then\n'
    r'ps -p "\$pidlist" -o rsz=\n'
    r"fi \| awk '\{ sum \+= \$1 \}; END \{ print 0\+sum \}'\Z"
)
_PS_C = re.compile(
    r"local progname\n"
    r"progname=\$\{1:-(?P<name>[A-Za-z0-9_.:+-]{1,15})\}\n"
    r'ps -C "\$progname" -o (?P<metric>rsz|"\$KSM_PS_METRIC") \| '
    r"awk '\{ sum \+= \$1 \}; END \{ (?:print sum|printf \(\"%\.0f\", sum\)) \}'\Z"
)
_FUNCTION = re.compile(r"^committed_memory \(\) \{\n(?P<body>.*?)\n\}$", re.M | re.S)
# The rest of the decision, which all three scripts share, line by line.
_SHARED = (
    "KSM_THRES_COEF=${KSM_THRES_COEF:-20}",
    "KSM_THRES_CONST=${KSM_THRES_CONST:-2048}",
    "total=`awk '/^MemTotal:/ {print $2}' /proc/meminfo`",
    "thres=$[total * KSM_THRES_COEF / 100]",
    "if [ $KSM_THRES_CONST -gt $thres ]; then",
    "thres=$KSM_THRES_CONST",
    "committed=`committed_memory`",
    "if [ $[committed + thres] -lt $total -a $free -gt $thres ]; then",
    "KSMCTL stop",
)
_FREE = re.compile(
    r"^awk '/\^\(MemFree\|Buffers\|Cached\):/ \{free \+= \$2\}; "
    r"END (?:\{print free\}|\{ printf \(\"%\.0f\", free\) \})' \\$",
    re.M,
)
_PS_METRIC_DEFAULT = "KSM_PS_METRIC=${KSM_PS_METRIC:-pss}"


def normalise(script: str) -> str:
    """The lines without indentation, comments-only lines and blank lines."""
    lines = (line.strip() for line in script.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("#"))


def recognise(script: str) -> CommittedRule | str:
    """The rule of this ksmtuned script, or why it is not one recognised."""
    text = normalise(script)
    lines = set(text.splitlines())
    missing = [line for line in _SHARED if line not in lines]
    if missing:
        return f"no line `{missing[0]}`"
    if not _FREE.search(text):
        return "free memory not counted as MemFree + Buffers + Cached"
    functions = _FUNCTION.findall(text)
    if len(functions) != 1:
        return f"{len(functions)} committed_memory functions, expected one"
    body = functions[0]
    found = _PGREP.match(body)
    if found is not None:
        words = found.group("options").replace("-d ' '", "-d").split()
        if "-d" not in words or len(set(words)) != len(words):
            return f"pgrep {found.group('options').strip()}: not one list of pids"
        select = BY_CMDLINE if "-f" in words else BY_NAME
        return CommittedRule(select, found.group("pattern"), RSZ)
    found = _PS_C.match(body)
    if found is not None:
        if found.group("metric") == RSZ:
            return CommittedRule(BY_EXACT_NAME, found.group("name"), RSZ)
        if _PS_METRIC_DEFAULT not in lines:
            return f"KSM_PS_METRIC used without the line `{_PS_METRIC_DEFAULT}`"
        return CommittedRule(BY_EXACT_NAME, found.group("name"), CONF_METRIC)
    return "committed_memory() counts processes in a way not known here"


@dataclass(frozen=True)
class KsmtunedProcess:
    """The running ksmtuned: its oldest live process (the script forks a loop and, at
    each look, subshells of the same name)."""

    pid: int
    start_ticks: int | None  # clock ticks after boot
    argv: tuple[str, ...]  # empty when its command line could not be read


def find_ksmtuned(procfs: Path, names: ProcessNames) -> KsmtunedProcess | None:
    """The oldest live process named ksmtuned; None when none is alive. A zombie (killed,
    not yet reaped) or a dead one is not running: it will never write `run` again."""
    alive: list[tuple[int, int, int | None]] = []
    for pid, name in names.names.items():
        if name != KSMTUNED_NAME:
            continue
        try:
            stat = read_stat(procfs, pid)
        except (OSError, ValueError):
            continue  # exited meanwhile
        if stat.alive:
            alive.append((stat.start_ticks or 0, pid, stat.start_ticks))
    if not alive:
        return None
    _, pid, start = min(alive)
    try:
        argv = tuple(read_cmdline(procfs, pid))
    except OSError:
        argv = ()
    return KsmtunedProcess(pid, start, argv)


_SHELLS = ("bash", "sh")


def script_path(argv: tuple[str, ...]) -> str | None:
    """The script a ksmtuned command line runs: `/bin/bash /usr/sbin/ksmtuned` (how the
    kernel starts a #! script), or argv[0] when no shell comes first."""
    if not argv:
        return None
    if os.path.basename(argv[0]) not in _SHELLS:
        return argv[0]
    for arg in argv[1:]:
        if arg == "--" or arg.startswith("-"):
            continue
        return arg
    return None


def read_script(procfs: Path, process: KsmtunedProcess) -> str:
    """The text of the script the process runs, as it sees the file (/proc/PID/root; its
    working directory for a relative path). Raises OSError."""
    path = script_path(process.argv)
    if path is None:
        raise OSError(errno.ENOENT, "no script in its command line")
    base = procfs / str(process.pid) / ("root" if path.startswith("/") else "cwd")
    try:
        data = read_regular_file(base / path.lstrip("/"), MAX_SCRIPT_BYTES)
    except PermissionError:
        # /proc/PID/root takes ptrace rights over the process; on the host's own /proc
        # the file is the same one by its path.
        if procfs != Path("/proc") or not path.startswith("/"):
            raise
        data = read_regular_file(path, MAX_SCRIPT_BYTES)
    return data.decode("utf-8", "replace")


@dataclass(frozen=True)
class RuleLook:
    """The rule of the running ksmtuned, or why there is none (`problem`)."""

    process: KsmtunedProcess
    rule: CommittedRule | None
    problem: str | None = None

    @property
    def script(self) -> str:
        return script_path(self.process.argv) or "?"


def ksmtuned_rule(procfs: Path, process: KsmtunedProcess) -> RuleLook:
    try:
        found = recognise(read_script(procfs, process))
    except OSError as e:
        path = script_path(process.argv) or "its script"
        return RuleLook(process, None, f"cannot read {path}: {describe_error(e)}")
    if isinstance(found, str):
        return RuleLook(process, None, f"{script_path(process.argv)}: not recognised: {found}")
    return RuleLook(process, found)
