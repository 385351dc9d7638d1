"""Entry point: `ksm-exporter [flags]` serves; `status`, `watch`, `transitions`, `experiment`
are subcommands."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from ksm_exporter.flags.parser import OneLineParser

SUBCOMMANDS = ("status", "watch", "transitions", "experiment")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Dispatch on the first word ourselves: argparse subparsers would let a subcommand's
    # defaults overwrite flags given before it.
    command = args[0] if args and not args[0].startswith("-") else "serve"
    if command not in (*SUBCOMMANDS, "serve"):
        OneLineParser(prog="ksm-exporter").error(
            f"unknown command {command!r} (commands: {', '.join(SUBCOMMANDS)})"
        )
    # ksm_exporter/flags/COMMAND.py parses before ksm_exporter/commands/COMMAND.py is
    # imported: --help or a wrong flag loads only the command's flags, and status, watch
    # and transitions never load prometheus_client or the daemon.
    flags = importlib.import_module(f"ksm_exporter.flags.{command}")
    parsed = flags.parser().parse_args(args[1:] if args[:1] == [command] else args)
    run: int = importlib.import_module(f"ksm_exporter.commands.{command}").run(parsed)
    return run


if __name__ == "__main__":
    sys.exit(main())
