"""Run a function without root's privileges, to see what an unprivileged exporter sees."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable

NOBODY = 65534


def run_in_child(fn: Callable[[], object]) -> object:
    """fn() in a forked child; its JSON-able result comes back through a pipe. Forked
    rather than a new interpreter: ours may sit where nobody cannot go."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(fn()).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child failed"
    return json.loads(data)


def run_as_nobody(fn: Callable[[], object]) -> object:
    """fn() in a forked child that dropped to nobody, to see what an unprivileged
    exporter sees."""

    def dropped() -> object:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        return fn()

    return run_in_child(dropped)
