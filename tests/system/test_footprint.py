"""What the exporter keeps in memory: only the libraries it uses, heap it freed given back."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.support import REPO, copy_fixture, run_exporter


def mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_outside_systemd_neither_libsystemd_nor_unicode_tables_are_loaded(
    tmp_path: Path,
) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    with run_exporter(root, tmp=tmp_path, env={"NOTIFY_SOCKET": "", "JOURNAL_STREAM": ""}) as e:
        assert e.metrics()["ksm_up"] == 1
        maps = mapped(e.proc.pid)
    assert "libsystemd" not in maps  # no journal, no sd_notify: ~1.6 MB not loaded
    assert "unicodedata" not in maps  # the listen address resolved without the idna codec


def test_under_systemd_libsystemd_is_loaded_to_notify(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(30)
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify")}
        with run_exporter(root, tmp=tmp_path, env=env) as e:
            assert b"READY=1" in notify.recv(4096).splitlines()
            assert "libsystemd" in mapped(e.proc.pid)


# A child that fills the heap with blocks malloc keeps (small enough not to be mmapped),
# frees all but every 64th (so the heap's top cannot shrink by itself), and prints its RSS
# in kB before and after give_back_freed_memory().
GIVE_BACK = """
import re, sys
from ksm_exporter.daemon.malloc import give_back_freed_memory
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
blocks = [bytes(4000) for _ in range(20000)]
kept = blocks[::64]
del blocks
before = rss()
give_back_freed_memory()
print(before, rss(), len(kept))
"""


def test_freed_heap_is_given_back_to_the_kernel() -> None:
    out = subprocess.run(
        [sys.executable, "-c", GIVE_BACK], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    before, after = int(out[0]), int(out[1])
    assert before - after > 40_000, (before, after)  # most of the ~80 MB freed


# Threads that each malloc a block (over pymalloc's 512 bytes) while the others hold theirs,
# then glibc's malloc_stats() on stderr: one "Arena N:" line per arena in use.
ARENAS = """
import ctypes, sys, threading
from ksm_exporter.daemon.malloc import limit_arenas
if sys.argv[1] == "limit":
    limit_arenas(1)
barrier = threading.Barrier(6)
def allocate():
    block = bytes(100_000)
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(5)]
for t in threads:
    t.start()
barrier.wait()  # every thread holds its block: each would take an arena of its own
ctypes.CDLL(None).malloc_stats()
barrier.wait()
"""


def arenas(mode: str) -> int:
    err = subprocess.run(
        [sys.executable, "-c", ARENAS, mode], cwd=REPO, capture_output=True, text=True, check=True
    ).stderr
    return sum(line.startswith("Arena ") for line in err.splitlines())


def test_threads_share_the_capped_malloc_arenas() -> None:
    assert arenas("limit") == 1
    assert arenas("default") > 1  # what the cap prevents
