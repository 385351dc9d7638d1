"""Who made each edge of `run`: ksmtuned by its own rule, another controller, or no telling.

A fixture /proc holds a compute node as ksmtuned sees it (meminfo, a ksmtuned process,
qemu processes with their rss, maybe MOM or virt-handler); a fixture sysfs holds `run`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

import pytest

from ksm_exporter.model.derived import KIB, RunState, page_size
from ksm_exporter.model.edge_cause import (
    Cause,
    KsmtunedFigures,
    ProcessesSeen,
    edge_cause,
    explain_edge,
)
from ksm_exporter.readers import Paths
from ksm_exporter.readers.edge_inputs import edge_context
from ksm_exporter.readers.meminfo import read_meminfo
from ksm_exporter.state.monitor import KsmMonitor
from ksm_exporter.state.transitions import Transition, TransitionTracker

from .as_nobody import run_as_nobody
from .fake_procfs import write_ksmtuned_node, write_meminfo
from .support import FIXTURES, copy_fixture, write_ksm

PAGE = page_size()
STOCK_CONF = FIXTURES / "ksmtuned" / "stock.conf"  # KSM_THRES_COEF 20: 20% of MemTotal
TOTAL_KB = 32 * 1024 * 1024
THRES_KB = TOTAL_KB * 20 // 100  # ksmtuned's threshold on this 32 GiB node
GIB_KB = 1024 * 1024

# --- the rule -------------------------------------------------------------------------------

SEEN = ProcessesSeen(visible=True, ksmtuned_running=True)
LOW = KsmtunedFigures(TOTAL_KB, THRES_KB, 28 * GIB_KB, THRES_KB - 1)  # ksmtuned starts KSM
HIGH = KsmtunedFigures(TOTAL_KB, THRES_KB, 10 * GIB_KB, 20 * GIB_KB)  # ksmtuned stops KSM


@pytest.mark.parametrize(
    ("run", "figures", "seen", "cause"),
    [
        (1, LOW, SEEN, Cause.KSMTUNED),
        (0, HIGH, SEEN, Cause.KSMTUNED),
        (0, LOW, SEEN, Cause.OTHER),  # ksmtuned would have kept it running
        (1, HIGH, SEEN, Cause.OTHER),
        (5, LOW, SEEN, Cause.KSMTUNED),  # the offline bit does not change the state
        (2, LOW, SEEN, Cause.OTHER),  # ksmtuned never unmerges
        (1, LOW, ProcessesSeen(visible=True), Cause.OTHER),  # no ksmtuned
        (1, LOW, ProcessesSeen(visible=False), Cause.UNKNOWN),
        (2, LOW, ProcessesSeen(visible=False), Cause.OTHER),
        (1, KsmtunedFigures(TOTAL_KB, None, 28 * GIB_KB, 1), SEEN, Cause.UNKNOWN),
        (1, KsmtunedFigures(TOTAL_KB, THRES_KB, None, 1), SEEN, Cause.UNKNOWN),
    ],
)
def test_cause_of_an_edge(
    run: int, figures: KsmtunedFigures, seen: ProcessesSeen, cause: Cause
) -> None:
    assert edge_cause(run, figures, seen) is cause


def test_committed_alone_makes_ksmtuned_start_with_free_memory_above_its_threshold() -> None:
    # committed + thres > total: ksmtuned keeps KSM running even with 20 GiB free.
    figures = KsmtunedFigures(TOTAL_KB, THRES_KB, TOTAL_KB - THRES_KB, 20 * GIB_KB)
    assert figures.would_run() is True
    assert edge_cause(1, figures, SEEN) is Cause.KSMTUNED


def test_the_controller_is_named_only_when_the_cause_is_other() -> None:
    mom = ProcessesSeen(visible=True, ksmtuned_running=True, controllers=("mom",))
    assert explain_edge(0, LOW, mom).controller == "mom"
    assert explain_edge(1, LOW, mom).controller is None  # ksmtuned's own rule explains it
    context = explain_edge(1, LOW, mom)
    assert context.ksmtuned_threshold_bytes == THRES_KB * KIB
    assert context.ksmtuned_free_bytes == (THRES_KB - 1) * KIB


# --- on a fixture node ----------------------------------------------------------------------


def node(tmp_path: Path, **kwargs: object) -> tuple[Path, KsmMonitor]:
    """A fixture node with KSM stopped, and a monitor that explains its edges."""
    root = tmp_path / "node"
    shutil.copytree(FIXTURES / "linux-6.18" / "sys", root / "sys")
    write_ksm(root, "run", 0)
    write_ksmtuned_node(root / "proc", page_size=PAGE, **kwargs)  # type: ignore[arg-type]
    explain = partial(edge_context, root / "proc", STOCK_CONF, PAGE)
    monitor = KsmMonitor(Paths(root / "sys", root / "proc"), TransitionTracker(), None, explain)
    monitor.poll()  # the first look: no edge
    return root, monitor


def edge(root: Path, monitor: KsmMonitor, run: int) -> Transition:
    """Write `run`, poll, and return the edge recorded."""
    before = len(monitor.tracker_state().history)
    write_ksm(root, "run", run)
    monitor.poll()
    history = monitor.tracker_state().history
    assert len(history) == before + 1, f"run={run} made no edge"
    return history[-1]


def test_ksmtuned_starts_and_stops_ksm_as_memory_crosses_its_threshold(tmp_path: Path) -> None:
    # 7 VMs of 4 GiB resident, free memory 1 GiB under the threshold: ksmtuned starts KSM.
    vms = [4 * GIB_KB] * 7
    free = THRES_KB - GIB_KB
    root, monitor = node(tmp_path, total_kb=TOTAL_KB, free_kb=free, qemu_rss_kb=vms)
    t = edge(root, monitor, 1)
    assert (t.to_state, t.cause, t.controller) == (RunState.RUNNING, Cause.KSMTUNED, None)
    assert t.ksmtuned_threshold_bytes == THRES_KB * KIB
    assert t.ksmtuned_committed_bytes == 7 * 4 * GIB_KB * KIB
    assert t.ksmtuned_free_bytes == free * KIB
    # Two VMs shut down, free memory 1 GiB over the threshold: ksmtuned stops KSM.
    shutil.rmtree(root / "proc" / "2005")
    shutil.rmtree(root / "proc" / "2006")
    write_meminfo(root / "proc", TOTAL_KB, THRES_KB + GIB_KB)
    t = edge(root, monitor, 0)
    assert (t.to_state, t.cause) == (RunState.STOPPED, Cause.KSMTUNED)
    assert t.ksmtuned_committed_bytes == 5 * 4 * GIB_KB * KIB
    assert t.ksmtuned_free_bytes == (THRES_KB + GIB_KB) * KIB
    # Someone starts it again with plenty of memory free: not ksmtuned's doing.
    t = edge(root, monitor, 1)
    assert t.cause is Cause.OTHER and t.controller is None
    counts = monitor.tracker_state().counts
    assert {k: n for k, n in counts.items() if n} == {
        (RunState.RUNNING, Cause.KSMTUNED): 1,
        (RunState.STOPPED, Cause.KSMTUNED): 1,
        (RunState.RUNNING, Cause.OTHER): 1,
    }


def test_an_edge_while_ksmtuned_is_absent_is_other_and_names_the_controller(
    tmp_path: Path,
) -> None:
    low = {"total_kb": TOTAL_KB, "free_kb": THRES_KB // 2, "qemu_rss_kb": [24 * GIB_KB]}
    root, monitor = node(tmp_path / "a", ksmtuned=False, **low)
    t = edge(root, monitor, 1)  # ksmtuned's rule would start it, but it does not run
    assert (t.cause, t.controller) == (Cause.OTHER, None)
    assert t.ksmtuned_free_bytes == THRES_KB // 2 * KIB  # its inputs are kept all the same
    root, monitor = node(tmp_path / "b", ksmtuned=False, controllers=["momd"], **low)
    assert (edge(root, monitor, 1).cause, edge(root, monitor, 0).controller) == (
        Cause.OTHER,
        "mom",
    )
    root, monitor = node(tmp_path / "c", controllers=["virt-handler"], **low)
    assert edge(root, monitor, 1).cause is Cause.KSMTUNED
    t = edge(root, monitor, 0)  # ksmtuned runs, but its rule says run: virt-handler stopped it
    assert (t.cause, t.controller) == (Cause.OTHER, "virt-handler")


def test_hidden_processes_give_unknown_and_no_committed_memory(tmp_path: Path) -> None:
    # hidepid=2 for an unprivileged reader: only its own processes are listed, no pid 1.
    low = {"total_kb": TOTAL_KB, "free_kb": THRES_KB // 2, "qemu_rss_kb": [24 * GIB_KB]}
    root, monitor = node(tmp_path, init=False, **low)
    t = edge(root, monitor, 1)
    assert t.cause is Cause.UNKNOWN and t.ksmtuned_committed_bytes is None
    assert t.ksmtuned_threshold_bytes == THRES_KB * KIB  # meminfo and the config were read
    assert t.to_json()["ksmtuned_committed_bytes"] is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_processes_of_root_unreadable_to_nobody_give_unknown() -> None:
    # hidepid=1: the directories are listed but their files refused. Read as nobody, as an
    # exporter without root's privileges would; the tree must be nobody-traversable.
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        proc = write_ksmtuned_node(
            Path(d) / "proc",
            total_kb=TOTAL_KB,
            free_kb=THRES_KB // 2,
            qemu_rss_kb=[24 * GIB_KB],
            page_size=PAGE,
        )
        for pid in os.listdir(proc):
            if pid.isdigit():
                os.chmod(proc / pid, 0o700)  # as root owns them under hidepid=1
        conf = Path(d) / "ksmtuned.conf"
        shutil.copy(STOCK_CONF, conf)

        memory = read_meminfo(proc)

        def cause() -> object:
            c = edge_context(proc, conf, PAGE, 1, memory)
            return [c.cause.value, c.ksmtuned_committed_bytes, c.ksmtuned_free_bytes]

        assert run_as_nobody(cause) == ["unknown", None, THRES_KB // 2 * KIB]
        # root sees it all: ksmtuned runs and its rule agrees.
        assert edge_context(proc, conf, PAGE, 1, memory).cause is Cause.KSMTUNED


def test_no_ksmtuned_configuration_leaves_the_threshold_out(tmp_path: Path) -> None:
    root = copy_fixture("linux-6.18", tmp_path)
    write_ksmtuned_node(
        root / "proc", total_kb=TOTAL_KB, free_kb=THRES_KB // 2, qemu_rss_kb=[], page_size=PAGE
    )
    memory = read_meminfo(root / "proc")
    context = edge_context(root / "proc", tmp_path / "absent.conf", PAGE, 1, memory)
    assert context.cause is Cause.UNKNOWN  # ksmtuned runs; its settings are not to be seen
    assert context.ksmtuned_threshold_bytes is None
    assert context.ksmtuned_free_bytes == THRES_KB // 2 * KIB
    assert edge_context(root / "proc", STOCK_CONF, PAGE, 1, memory).cause is Cause.KSMTUNED
