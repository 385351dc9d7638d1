"""The experiment's stand-in for a node's guests: N processes of mergeable memory.

`--workload 4x256M --duplicate 0.75` starts 4 processes, each with 256 MiB of anonymous
memory marked MADV_MERGEABLE. The first 75% of each is identical across the processes
(page i holds the same bytes in every process, like guests booted from one image) and
differs from page to page inside a process; the rest is random. KSM can then keep one copy
of each identical page, so the memory it can save is the identical part of N-1 processes:

    expected saved = (N - 1) x identical pages per process x page size

The children are `python -m ksm_exporter.experiment.workload`, driven by one line on
stdin ("prng": overwrite the random part, like a PRNG memory test run in the guests), and
they end when stdin closes, when the parent dies (PR_SET_PDEATHSIG), or when killed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil

from ksm_exporter.experiment.mergeable import PAGE_SIZE, MergeableMemory

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_WORKLOAD = re.compile(r"(\d+)\s*[x*]\s*(.+)", re.IGNORECASE)

PR_SET_PDEATHSIG = 1


def parse_size(text: str) -> int:
    """`256M`, `1G`, `512KiB`, `4096` (bytes) -> bytes; binary units, like `free -m`."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a size: {text!r} (try 256M or 1G)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def format_size(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit.lower()] and n % _UNITS[unit.lower()] == 0:
            return f"{n // _UNITS[unit.lower()]}{unit}"
    return str(n)


@dataclass(frozen=True)
class WorkloadSpec:
    processes: int
    bytes_each: int
    duplicate: float = 0.75

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError("the workload needs at least one process")
        if self.bytes_each < PAGE_SIZE:
            raise ValueError(f"each process needs at least one page ({PAGE_SIZE} bytes)")
        if not 0.0 <= self.duplicate <= 1.0:
            raise ValueError("--duplicate must be between 0 and 1")

    @property
    def pages_each(self) -> int:
        return -(-self.bytes_each // PAGE_SIZE)  # whole pages, rounded up

    @property
    def identical_pages_each(self) -> int:
        return round(self.pages_each * self.duplicate)

    @property
    def total_bytes(self) -> int:
        return self.processes * self.pages_each * PAGE_SIZE

    @property
    def fill_timeout(self) -> float:
        """Generous time to fill (or rewrite) the memory: Python writes a page at a time."""
        return 120.0 + 60.0 * self.total_bytes / 2**30

    @property
    def expected_saved_bytes(self) -> int:
        """One copy of each identical page stays; the other N-1 are what KSM saves."""
        return (self.processes - 1) * self.identical_pages_each * PAGE_SIZE

    def describe(self) -> str:
        return (
            f"{self.processes}x{format_size(self.bytes_each)}, "
            f"{self.duplicate:.0%} identical across the processes"
        )


def parse_workload(text: str, duplicate: float = 0.75) -> WorkloadSpec:
    """`4x256M` -> 4 processes of 256 MiB."""
    m = _WORKLOAD.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not NxSIZE: {text!r} (try 4x256M)")
    return WorkloadSpec(int(m.group(1)), parse_size(m.group(2)), duplicate)


class WorkloadError(RuntimeError):
    pass


class Workload:
    """Start the processes (`start`), have them run the PRNG (`prng_pass`), and always end
    them (`stop`, in a `finally`)."""

    EXIT_WAIT = 5.0  # seconds for the processes to exit once their stdin is closed
    SIGNAL_WAIT = 3.0  # and then for each of SIGTERM and SIGKILL

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.procs: list[psutil.Popen] = []  # subprocess.Popen's API, and psutil's
        # Identical within this run only: another run's or test's pages never match ours.
        self.salt = os.urandom(16).hex()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> None:
        for _ in range(self.spec.processes):
            self.procs.append(
                psutil.Popen(
                    [
                        sys.executable,
                        "-m",
                        __name__,
                        str(self.spec.pages_each),
                        str(self.spec.identical_pages_each),
                        self.salt,
                        str(os.getpid()),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        self._expect("ready", self.spec.fill_timeout)

    def prng_pass(self) -> None:
        for p in self.procs:
            try:
                p.stdin.write(b"prng\n")
                p.stdin.flush()
            except BrokenPipeError:
                raise WorkloadError(self._died(p, "")) from None
        self._expect("done", self.spec.fill_timeout)

    def _expect(self, word: str, timeout: float) -> None:
        """Wait for every child to print `word`; a child that dies or stays silent is an error."""
        waiting = {p.stdout: p for p in self.procs}
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            for stream in waiting:
                sel.register(stream, selectors.EVENT_READ)
            while waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkloadError(
                        f"{len(waiting)} workload process(es) not {word} after {timeout:.0f}s"
                    )
                for key, _ in sel.select(min(left, 1.0)):
                    p = waiting[key.fileobj]
                    line = p.stdout.readline().decode(errors="replace").strip()
                    if line != word:
                        raise WorkloadError(self._died(p, line))
                    sel.unregister(key.fileobj)
                    del waiting[key.fileobj]

    def _died(self, p: psutil.Popen, line: str) -> str:
        try:
            p.wait(5)
            err = p.stderr.read().decode(errors="replace").strip()
        except psutil.TimeoutExpired:
            err = ""
        if err:
            why = err.splitlines()[-1]
        elif line:
            why = f"printed {line!r}"
        elif p.returncode is not None and p.returncode < 0:
            why = f"killed by {signal.Signals(-p.returncode).name}"  # the OOM killer, say
        else:
            why = f"exit status {p.returncode}"
        return f"workload process {p.pid} failed: {why}"

    def stop(self) -> None:
        """Close stdin (they exit), then SIGTERM, then SIGKILL; reap every one."""
        for p in self.procs:
            with contextlib.suppress(OSError):
                p.stdin.close()
        _, alive = psutil.wait_procs(self.procs, timeout=self.EXIT_WAIT)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for left in alive:
                with contextlib.suppress(psutil.Error):
                    left.send_signal(sig)
            _, alive = psutil.wait_procs(alive, timeout=self.SIGNAL_WAIT)
        for p in self.procs:
            for stream in (p.stdout, p.stderr):
                with contextlib.suppress(OSError):
                    stream.close()


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ksm-exporter workload process")
    p.add_argument("pages", type=int)
    p.add_argument("identical", type=int)
    p.add_argument("salt")
    p.add_argument("parent", type=int)
    args = p.parse_args(argv)
    _die_with_parent(args.parent)
    # Ctrl-C reaches the whole process group; the parent decides when we end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with MergeableMemory(
        args.pages, args.identical, pattern=bytes.fromhex(args.salt), per_page=True
    ) as memory:
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() == "prng":
                memory.randomize()
                print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
