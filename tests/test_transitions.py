from __future__ import annotations

from ksm_exporter.model.derived import RunState, is_running, run_state, sharing_ratio
from ksm_exporter.readers.meminfo import MemInfo
from ksm_exporter.state.transitions import Transition, TransitionTracker

MEM = MemInfo(total=32 * 2**30, free=6 * 2**30, available=10 * 2**30)


def test_run_values_to_states_ignoring_the_offline_bit() -> None:
    assert [run_state(r) for r in (0, 1, 2, 4, 5, 6)] == [
        RunState.STOPPED,
        RunState.RUNNING,
        RunState.UNMERGING,
        RunState.STOPPED,
        RunState.RUNNING,
        RunState.UNMERGING,
    ]
    assert [is_running(r) for r in (0, 1, 2, 5)] == [False, True, False, True]


def test_sharing_ratio_is_zero_not_nan_when_nothing_is_shared() -> None:
    assert sharing_ratio(0, 0) == 0.0
    assert sharing_ratio(178960, 26471) == 178960 / 26471


def test_first_look_is_not_a_change_and_each_edge_is_counted_with_memory() -> None:
    tracker = TransitionTracker(max_history=10)
    assert tracker.observe(0, MEM, 100.0) is None
    assert tracker.observe(0, MEM, 101.0) is None
    t = tracker.observe(1, MEM, 102.0)
    assert t == Transition(
        timestamp=102.0,
        from_state=RunState.STOPPED,
        to_state=RunState.RUNNING,
        run=1,
        mem_total_bytes=MEM.total,
        mem_used_bytes=MEM.total - MEM.free,
        mem_free_bytes=MEM.free,
        mem_available_bytes=MEM.available,
    )
    assert tracker.observe(5, MEM, 103.0) is None  # offline bit: still running
    tracker.observe(0, None, 104.0)
    tracker.observe(1, MEM, 105.0)
    tracker.observe(2, MEM, 106.0)
    state = tracker.state()
    assert state.current is RunState.UNMERGING
    assert state.counts == {RunState.RUNNING: 2, RunState.STOPPED: 1, RunState.UNMERGING: 1}
    assert state.last[RunState.RUNNING].timestamp == 105.0
    assert state.last[RunState.STOPPED].mem_free_bytes is None  # memory was unreadable
    assert [t.to_state.value for t in state.history] == [
        "running",
        "stopped",
        "running",
        "unmerging",
    ]


def test_history_is_bounded_and_restored_history_gives_last_edges() -> None:
    tracker = TransitionTracker(max_history=3)
    for i in range(10):
        tracker.observe(i % 2, MEM, float(i))
    history = tracker.state().history
    assert [t.timestamp for t in history] == [7.0, 8.0, 9.0]
    again = TransitionTracker(max_history=3, restored=history)
    state = again.state()
    assert state.counts == dict.fromkeys(RunState, 0)
    assert state.last[RunState.RUNNING].timestamp == 9.0
    assert state.last[RunState.STOPPED].timestamp == 8.0


def test_json_round_trip_and_watch_message() -> None:
    tracker = TransitionTracker()
    tracker.observe(0, MEM, 1.0)
    t = tracker.observe(1, MEM, 2.0)
    assert t is not None
    assert Transition.from_json(t.to_json()) == t
    assert t.watch_message() == "KSM is running. 26624 MB used. 6144 MB free."
