"""Entry point: `ksm-exporter [flags]` serves; `status`, `watch`, `transitions`, `experiment`
are subcommands."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ksm_exporter import flags


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Dispatch on the first word ourselves: argparse subparsers would let a subcommand's
    # defaults overwrite flags given before it.
    command = args[0] if args and not args[0].startswith("-") else "serve"
    if command == "status":
        from .commands import status

        return status.run(flags.status_parser().parse_args(args[1:]))
    if command == "watch":
        from .commands import watch

        return watch.run(flags.watch_parser().parse_args(args[1:]))
    if command == "transitions":
        from .commands import transitions

        return transitions.run(flags.transitions_parser().parse_args(args[1:]))
    if command == "experiment":
        from .commands import experiment

        return experiment.run(flags.experiment_parser().parse_args(args[1:]))
    if command == "serve":
        from .commands import serve

        return serve.run(
            flags.serve_parser().parse_args(args[1:] if args[:1] == ["serve"] else args)
        )
    flags.serve_parser().error(
        f"unknown command {command!r} (commands: status, watch, transitions, experiment)"
    )


if __name__ == "__main__":
    sys.exit(main())
