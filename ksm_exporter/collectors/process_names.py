"""Process names across scrapes, so a scrape need not re-read every name.

Naming every process costs one open/read/close of /proc/PID/comm each: about 55 ms for
10,000 processes on a 2-core machine, most of a scrape. Names rarely change, so each scrape
lists the pids (one listdir) and reads the names of:
- pids it has not seen before;
- pids first seen at the previous scrape: libvirt forks, then execs qemu in the same pid
  milliseconds later, so a fork seen between the two is named again one scrape later;
- pids whose name matters (a VM, ksmd, ksmtuned): their name is checked at every scrape,
  so a pid reused by another program is never reported as that VM;
- one in SWEEP_SCRAPES of the others, in turn (pid modulo SWEEP_SCRAPES): any other change
  of name (a late exec, a pid reused by a VM) is seen within SWEEP_SCRAPES scrapes.
Pids gone from the listing are forgotten.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from ksm_exporter.readers import describe_error
from ksm_exporter.readers.processes import ProcessNames, list_pids, read_names

SWEEP_SCRAPES = 8


class ProcessNameCache:
    def __init__(self, matters: Callable[[str], bool], sweep: int = SWEEP_SCRAPES) -> None:
        self.matters = matters
        self.sweep = sweep
        self._lock = threading.Lock()  # concurrent scrapes take turns
        self._names: dict[int, str] = {}
        self._first_seen: dict[int, int] = {}  # pid -> the scrape that first listed it
        self._matter: set[int] = set()  # pids whose name matters
        self._scrape = 0

    def names(self, procfs: Path) -> ProcessNames:
        try:
            pids = list_pids(procfs)
        except OSError as e:
            return ProcessNames(error=describe_error(e))
        with self._lock:
            self._scrape += 1
            scrape, names, first_seen = self._scrape, self._names, self._first_seen
            listed = set(pids)
            for pid in names.keys() - listed:
                del names[pid]
            for pid in first_seen.keys() - listed:
                del first_seen[pid]
            self._matter &= listed
            turn = scrape % self.sweep
            stale = [
                pid
                for pid in pids
                if pid not in names
                or first_seen[pid] >= scrape - 1
                or pid % self.sweep == turn
                or pid in self._matter
            ]
            for pid in stale:
                first_seen.setdefault(pid, scrape)
            fresh = read_names(procfs, stale)
            for pid in stale:
                name = fresh.get(pid)
                if name is None:  # exited since the listing
                    names.pop(pid, None)
                    first_seen.pop(pid, None)
                    self._matter.discard(pid)
                    continue
                names[pid] = name
                if self.matters(name):
                    self._matter.add(pid)
                else:
                    self._matter.discard(pid)
            return ProcessNames(names=dict(names))
