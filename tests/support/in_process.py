"""The daemon as `serve` builds it, in the test's own process, on a fixture tree: its
threads not started (a test polls the watcher and asks the app itself, or starts the
HTTP loop)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ksm_exporter.commands.serve import Daemon, build
from ksm_exporter.flags.serve import parser as serve_parser


@contextlib.contextmanager
def built_daemon(root: Path, *flags: str) -> Iterator[Daemon]:
    """`serve` on loopback port 0 with --path.sysfs/--path.procfs under `root`; its socket
    and collector threads closed on exit."""
    args = serve_parser().parse_args(
        [
            "--web.listen-address=127.0.0.1:0",
            f"--path.sysfs={root}/sys",
            f"--path.procfs={root}/proc",
            *flags,
        ]
    )
    d = build(args)
    try:
        yield d
    finally:
        d.server.server_close()
        d.scraper.shutdown()
