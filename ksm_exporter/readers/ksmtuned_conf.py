"""Read ksmtuned's configuration, /etc/ksmtuned.conf.

ksmtuned sources the file with bash (`. /etc/ksmtuned.conf`) and then fills in each unset
or empty setting with `${KSM_THRES_COEF:-20}` and the like; the assignments are read as
bash would (shell_assignments.py). (A quoted value spanning lines, valid bash, is not
supported: no ksmtuned setting needs one.)
Values must be decimal integers; another value is an error and the default is used.
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

_INTEGER = re.compile(r"[+-]?[0-9]+\Z")

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
        if not _INTEGER.match(value):
            errors.append(f"{name}: not a decimal integer: {value[:40]!r}; using the default")
        # bash's arithmetic is signed 64-bit: a larger number is not one ksmtuned can use.
        elif len(value.lstrip("+-")) > 19 or abs(int(value)) >= 2**63:
            errors.append(
                f"{name}: outside the signed 64-bit range: {value[:40]}; using the default"
            )
        else:
            values[name] = int(value)
    return KsmtunedConfig(**values), errors  # type: ignore[arg-type]


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
