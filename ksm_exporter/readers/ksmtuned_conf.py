"""Read ksmtuned's configuration, /etc/ksmtuned.conf.

ksmtuned sources the file with bash (`. /etc/ksmtuned.conf`) and then fills in each unset
or empty setting with `${KSM_THRES_COEF:-20}` and the like; the assignments are read as
bash would (shell_assignments.py). (A quoted value spanning lines, valid bash, is not
supported: no ksmtuned setting needs one.)
Each number is read as the script reads it: those in its arithmetic (`$[...]`:
KSM_THRES_COEF, KSM_SLEEP_MSEC, KSM_NPAGES_BOOST, KSM_NPAGES_DECAY) as bash's arithmetic
does, a leading 0 octal and 0x hexadecimal (`KSM_THRES_COEF=010` is 8 percent); the
others, compared with `[ -gt ]` or slept, as decimal integers. Another value is an error
and the default is used.
KSM_PS_METRIC, which only Proxmox VE's ksmtuned reads (what `ps -o` sums over its kvm
processes), is a ps field name: pss, rss/rsz/rssize or vsz/vsize.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

from ksm_exporter.model.defaults import KSMTUNED_CONFIG
from ksm_exporter.model.flag_types import Option
from ksm_exporter.readers import read_regular_file
from ksm_exporter.readers.shell_assignments import parse_assignments

_DECIMAL = re.compile(r"[+-]?[0-9]+\Z")
# bash's integer constants in arithmetic (bash(1), ARITHMETIC EVALUATION), without the
# base#n form no ksmtuned setting uses: `08` is no number there (value too great for
# base), and the script's `$[...]` with it fails.
_ARITHMETIC = re.compile(
    r"(?P<sign>[+-]?)(?:0[xX](?P<hex>[0-9a-fA-F]+)|0(?P<octal>[0-7]*)|(?P<decimal>[1-9][0-9]*))\Z"
)
# The settings the ksmtuned script uses in `$[...]` (the others only in `[ -gt ]`/`-lt`
# and as sleep's argument, which read decimal).
ARITHMETIC = ("KSM_THRES_COEF", "KSM_SLEEP_MSEC", "KSM_NPAGES_BOOST", "KSM_NPAGES_DECAY")

# Which file is read: an option of the ksmtuned collector and of `watch --explain`.
CONFIG_OPTION = Option(
    "--collector.ksmtuned.config",
    dest="ksmtuned_config",
    type=Path,
    default=KSMTUNED_CONFIG,
    metavar="FILE",
    help=f"ksmtuned's configuration (default {KSMTUNED_CONFIG})",
)


@dataclass(frozen=True)
class KsmtunedConfig:
    """ksmtuned's settings; the defaults are those of the ksmtuned script."""

    KSM_THRES_COEF: int = 20  # percent of MemTotal
    KSM_THRES_CONST: int = 2048  # kB, the threshold's floor
    KSM_NPAGES_BOOST: int = 300
    KSM_NPAGES_DECAY: int = -50
    KSM_NPAGES_MIN: int = 64
    KSM_NPAGES_MAX: int = 1250
    KSM_SLEEP_MSEC: int = 10
    KSM_MONITOR_INTERVAL: int = 60  # seconds
    KSM_PS_METRIC: str = "pss"  # Proxmox VE's ksmtuned only


SETTINGS = tuple(f.name for f in fields(KsmtunedConfig) if f.type in (int, "int"))
PS_METRICS = ("pss", "rss", "rsz", "rssize", "vsz", "vsize")


def parse_ksmtuned_conf(text: str) -> tuple[KsmtunedConfig, list[str]]:
    """The configuration and what was wrong with it (each wrong setting keeps its default)."""
    assigned, errors = parse_assignments(text)
    values: dict[str, int | str] = {}
    metric = assigned.get("KSM_PS_METRIC", "")
    if metric in PS_METRICS:
        values["KSM_PS_METRIC"] = metric
    elif metric:
        errors.append(f"KSM_PS_METRIC: not one of {', '.join(PS_METRICS)}: {metric[:40]!r}")
    for name in SETTINGS:
        value = assigned.get(name, "")
        if value == "":  # ${NAME:-default}: unset and empty both take the default
            continue
        number = arithmetic_integer(value) if name in ARITHMETIC else decimal_integer(value)
        if number is None:
            kind = "an integer in bash's arithmetic" if name in ARITHMETIC else "a decimal integer"
            errors.append(f"{name}: not {kind}: {value[:40]!r}; using the default")
        # bash's arithmetic is signed 64-bit: a larger number is not one ksmtuned can use.
        elif abs(number) >= 2**63:
            errors.append(
                f"{name}: outside the signed 64-bit range: {value[:40]}; using the default"
            )
        else:
            values[name] = number
    return KsmtunedConfig(**values), errors  # type: ignore[arg-type]


def decimal_integer(text: str) -> int | None:
    if not _DECIMAL.match(text):
        return None
    if len(text.lstrip("+-").lstrip("0")) > 19:
        return 2**63  # beyond 64 bits, whatever the digits (and no slow int() of them)
    return int(text)


def arithmetic_integer(text: str) -> int | None:
    m = _ARITHMETIC.match(text)
    if m is None:
        return None
    sign = -1 if m["sign"] == "-" else 1
    for digits, base, most in ((m["hex"], 16, 16), (m["octal"], 8, 22), (m["decimal"], 10, 19)):
        if digits is not None:
            if len(digits.lstrip("0")) > most:
                return 2**63  # beyond 64 bits: out of range whatever the digits
            return sign * int(digits or "0", base)
    raise AssertionError(text)


def read_ksmtuned_conf(path: Path) -> tuple[KsmtunedConfig, list[str]] | None:
    """The configuration and what was wrong with it; None when there is no such file
    (ksmtuned is not installed, or the exporter sees another /etc than ksmtuned's: which
    settings it runs with cannot be told). Raises OSError when the file exists but cannot
    be read, or is no regular file of at most 64 KiB (a FIFO there must not block the
    reader): its settings are unknown then, never taken to be the defaults."""
    try:
        data = read_regular_file(path, 64 * 1024)
    except FileNotFoundError:  # a dangling symlink too
        return None
    return parse_ksmtuned_conf(data.decode("utf-8", "replace"))
