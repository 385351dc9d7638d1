"""What the watcher writes at an edge, the state file loads back whole, every field:
Hypothesis makes the ksmtuned.conf, meminfo and processes the readers accept (a COEF of 20
digits, a negative CONST, 2^64 bytes of memory). 150 examples, each a fake /proc and a
saved state file: seconds of fuzzing, so a system test."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ksm_exporter.model.derived import run_state
from ksm_exporter.model.edge_cause import CONTROLLER_PROCESSES
from ksm_exporter.readers.edge_inputs import edge_context
from ksm_exporter.readers.meminfo import parse_meminfo
from ksm_exporter.state.state_file import StateFile
from ksm_exporter.state.transitions import TransitionTracker
from tests.support.fake_procfs import write_ksmtuned_script, write_process

# A setting as ksmtuned.conf may spell it: any decimal integer, huge, negative, signed,
# with leading zeros (octal in KSM_THRES_COEF, or no number there).
conf_numbers = st.integers(-(2**70), 2**70).map(str) | st.from_regex(
    r"[+-]?[0-9]{1,22}", fullmatch=True
)
# A meminfo figure in kB: u64 once in bytes, and a little past it (the reader refuses that).
kb_figures = st.integers(0, 2**64 // 1024 + 2) | st.integers(0, 2**24)


@st.composite
def meminfo_texts(draw: st.DrawFn) -> str:
    lines = [f"MemTotal: {draw(kb_figures)} kB", f"MemFree: {draw(kb_figures)} kB"]
    for name in ("MemAvailable", "Buffers", "Cached"):
        if draw(st.booleans()):
            lines.append(f"{name}: {draw(kb_figures)} kB")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(
    coef=conf_numbers,
    const=conf_numbers,
    meminfo=meminfo_texts(),
    rss_pages=st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 2**22), max_size=3),
    ksmtuned=st.booleans(),
    controllers=st.lists(st.sampled_from(sorted(CONTROLLER_PROCESSES)), unique=True),
    runs=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    timestamp=st.floats(0, time.time()),
)
def test_every_edge_the_watcher_records_loads_again(
    coef: str,
    const: str,
    meminfo: str,
    rss_pages: list[int],
    ksmtuned: bool,
    controllers: list[str],
    runs: tuple[int, int],
    timestamp: float,
) -> None:
    """Whatever ksmtuned.conf and meminfo the readers accept (a COEF of 20 digits, a
    negative CONST, 2^64 bytes of memory), and whatever the processes' statm says, the edge
    the watcher records is saved and loaded back whole, every field."""
    try:
        memory = parse_meminfo(meminfo)
    except ValueError:
        memory = None  # the watcher records the edge without memory then
    before, run = runs
    assume(run_state(before) is not run_state(run))
    with tempfile.TemporaryDirectory() as d:
        proc = Path(d) / "proc"
        write_process(proc, 1, "systemd", cmdline=["/sbin/init"])
        if ksmtuned:
            write_process(proc, 900, "ksmtuned", cmdline=["/bin/bash", "/usr/sbin/ksmtuned"])
            write_ksmtuned_script(proc, 900, "fedora")  # its rule: qemu-kvm's rsz
        for name in controllers:
            write_process(proc, 950 + len(name), name, cmdline=[name])
        for i, pages in enumerate(rss_pages):
            write_process(proc, 2000 + i, "qemu-kvm", cmdline=["qemu-kvm"], rss_pages=pages)
        conf = Path(d) / "ksmtuned.conf"
        conf.write_text(f"KSM_THRES_COEF={coef}\nKSM_THRES_CONST={const}\n")
        # What the watcher does at an edge (state/monitor.py): who made it, then record it.
        context = edge_context(proc, conf, 4096, run, memory)
        tracker = TransitionTracker()
        tracker.observe(before, memory, 0.0)
        edge = tracker.observe(run, memory, timestamp, context)
        assert edge is not None
        sf = StateFile(Path(d) / "state")
        assert sf.save(tracker.state().history)
        again = StateFile(sf.path)
        assert again.load() == [edge] and again.errors == 0
