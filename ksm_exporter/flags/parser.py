"""The parser every command uses (a wrong flag is one line), the flags several commands
share, and how a declared Option becomes a flag."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from ksm_exporter.model.flag_types import Option, parse_duration


class FlagError(ValueError):
    """A wrong flag, from a parser that raises rather than exits (a reload)."""


class OneLineParser(argparse.ArgumentParser):
    """A wrong flag is one line saying what is wrong, not a usage dump."""

    raise_errors = False

    def error(self, message: str) -> NoReturn:
        if self.raise_errors:
            raise FlagError(message)
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def add_option(p: argparse.ArgumentParser, option: Option) -> None:
    """The flag, listed once in --help; each alias sets the same value, hidden from --help
    but named in the flag's help."""
    also = f"; alias {', '.join(option.aliases)}" if option.aliases else ""
    hidden = [(alias, argparse.SUPPRESS) for alias in option.aliases]
    for flag, help_text in [(option.flag, option.help + also), *hidden]:
        p.add_argument(
            flag,
            dest=option.dest,
            type=option.type,
            default=option.default,
            metavar=option.metavar,
            help=help_text,
        )


def given_flags(parser: OneLineParser, argv: list[str]) -> dict[str, object]:
    """dest -> value of the flags present in `argv` only (no defaults filled in).
    Raises FlagError for a wrong flag instead of exiting."""
    parser.raise_errors = True
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> the flag's name (--log.level; the listed name, not an alias), for messages."""
    names: dict[str, str] = {}
    for a in parser._actions:
        if a.option_strings:
            names.setdefault(a.dest, a.option_strings[0])
    return names


def add_path_flags(p: argparse.ArgumentParser) -> None:
    for name, default in (("sysfs", "/sys"), ("procfs", "/proc")):
        p.add_argument(
            f"--path.{name}",
            dest=name,
            type=Path,
            default=Path(default),
            metavar="DIR",
            help=f"{name} mountpoint (default {default})",
        )


def add_watch_interval(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--watch.interval",
        dest="watch_interval",
        type=parse_duration,
        default=1.0,
        metavar="DURATION",
        help="how often `run` and memory are polled for state changes (default 1s)",
    )
