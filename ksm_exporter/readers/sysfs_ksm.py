"""Read every file of <sysfs>/kernel/mm/ksm.

What is exported is decided by the files present, never by the kernel version: 2.6.32
has 7 files, 6.18 has 24, and a file we do not know that holds one integer is kept too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ksm_exporter.model.ksm_files import ADVISOR_MODE, BY_FILE, FILE_METRICS
from ksm_exporter.readers import describe_error, parse_kernel_int, read_small_file

# The files whose value may be negative (printed with %ld; model/ksm_files says why).
SIGNED_FILES = frozenset(m.file for m in FILE_METRICS if m.signed)

# A known file that does not parse is an error; an unknown one that does not hold an
# integer is a format we cannot guess, so it is ignored rather than counted as broken on
# every scrape.
KNOWN_INTEGER_FILES = frozenset(BY_FILE)


@dataclass(frozen=True)
class AdvisorMode:
    active: str
    modes: tuple[str, ...]


@dataclass(frozen=True)
class KsmReading:
    """One read of the KSM directory."""

    present: bool
    values: dict[str, int] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)  # file -> text as read, stripped
    advisor_mode: AdvisorMode | None = None
    errors: dict[str, str] = field(default_factory=dict)  # file -> why it was skipped
    ignored: tuple[str, ...] = ()  # unknown files that do not hold one integer


def parse_int(name: str, text: str) -> int:
    """Parse one sysfs integer; ValueError says why it is not one."""
    return parse_kernel_int(text, signed=name in SIGNED_FILES)


def parse_advisor_mode(text: str) -> AdvisorMode:
    """`[none] scan-time`: the bracketed word is the active mode."""
    words = text.split()
    active = [w[1:-1] for w in words if len(w) > 2 and w[0] == "[" and w[-1] == "]"]
    if len(active) != 1:
        raise ValueError(f"no single [active] mode in {text.strip()[:60]!r}")
    return AdvisorMode(active=active[0], modes=tuple(w.strip("[]") for w in words))


# os.listdir returns a name that is not UTF-8 with surrogate escapes, which no exposition
# can write (label values are UTF-8, and the file name is one): such a file is counted
# under this one fixed name instead. No kernel makes one; a fixture tree or a bind mount can.
NAME_NOT_UTF8 = "(name not UTF-8)"


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def list_files(ksm_dir: Path) -> list[str] | None:
    """Names in the KSM directory, sorted; None when the directory is absent."""
    try:
        return sorted(os.listdir(ksm_dir))
    except OSError:  # missing, not a directory, or not listable: KSM is not readable
        return None


def read_ksm(ksm_dir: Path, only: tuple[str, ...] | None = None) -> KsmReading:
    """Read the KSM directory (or just the files in `only`, for the fast watcher poll)."""
    directory = str(ksm_dir)
    if only is None:
        names = list_files(ksm_dir)
    else:
        names = list(only) if os.path.isdir(directory) else None
    if names is None:
        return KsmReading(present=False)
    values: dict[str, int] = {}
    raw: dict[str, str] = {}
    errors: dict[str, str] = {}
    ignored: list[str] = []
    advisor: AdvisorMode | None = None

    prefix = os.path.join(directory, "")  # plain strings: pathlib costs more than the read
    for name in names:
        if not _utf8(name):
            errors[NAME_NOT_UTF8] = f"a file name that is not UTF-8: {name[:40]!r}"
            continue
        try:
            text = read_small_file(prefix + name)
        except FileNotFoundError:
            continue  # vanished between listdir and open: absent, as if never there
        except (OSError, ValueError) as e:
            errors[name] = describe_error(e)
            continue
        raw[name] = text.strip()
        try:
            if name == ADVISOR_MODE:
                advisor = parse_advisor_mode(text)
            else:
                values[name] = parse_int(name, text)
        except ValueError as e:
            if name in KNOWN_INTEGER_FILES or name == ADVISOR_MODE:
                errors[name] = str(e)
            else:
                ignored.append(name)  # a future file with text we cannot interpret
    return KsmReading(
        present=True,
        values=values,
        raw=raw,
        advisor_mode=advisor,
        errors=errors,
        ignored=tuple(ignored),
    )
