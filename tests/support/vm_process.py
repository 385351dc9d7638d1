"""A process named like qemu (or Proxmox VE's kvm) with MADV_MERGEABLE memory and a
platform's options on its command line, where the exporter reads them: a VM as the
per-VM series see it, on the real kernel."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Optional

from tests.support import REPO

QEMU_NAME = "qemu-system-x86"  # what qemu-system-x86_64's process name is cut to

# Names itself (prctl PR_SET_NAME) like qemu or kvm, maps PAGES identical mergeable pages,
# says "ready" and lives until its stdin closes.
CHILD = """
import ctypes, sys
from ksm_exporter.experiment.mergeable import MergeableMemory
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
memory = MergeableMemory(int(sys.argv[2]), int(sys.argv[2]), sys.argv[3].encode())
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def qemu_like_process(
    pages: int, name: str, args: tuple[str, ...], uid: Optional[int] = None
) -> Iterator[subprocess.Popen[str]]:
    """The process, as `uid` when given (as qemu runs as its own user: libvirt-qemu, or
    107 under virt-launcher), else as ours; ended on exit."""
    # A pattern of its own, so its pages merge with one another only.
    pattern = f"ksm-exporter-test-{uuid.uuid4()}"
    # Another user may not reach our interpreter (a venv of a pyenv under /root): Debian's
    # then, which needs nothing beyond the standard library to run CHILD.
    python = sys.executable if uid is None else "/usr/bin/python3"
    argv = [python, "-c", CHILD, name, str(pages), pattern, *args]
    as_user = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}
    child = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, **as_user
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        yield child
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(5)
