from __future__ import annotations

from ksm_exporter.model.derived import RunState, is_running, run_state, sharing_ratio
from ksm_exporter.model.edge_cause import Cause, EdgeContext
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
    # Observed without an edge context: no telling who made the edges.
    assert {k: n for k, n in state.counts.items() if n} == {
        (RunState.RUNNING, Cause.UNKNOWN): 2,
        (RunState.STOPPED, Cause.UNKNOWN): 1,
        (RunState.UNMERGING, Cause.UNKNOWN): 1,
    }
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
    assert set(state.counts.values()) == {0}
    assert state.last[RunState.RUNNING].timestamp == 9.0
    assert state.last[RunState.STOPPED].timestamp == 8.0


def test_json_round_trip_and_watch_message() -> None:
    tracker = TransitionTracker()
    tracker.observe(0, MEM, 1.0)
    t = tracker.observe(1, MEM, 2.0)
    assert t is not None
    assert Transition.from_json(t.to_json()) == t
    assert t.watch_message() == "KSM is running. 26624 MB used. 6144 MB free."


def test_an_edge_is_counted_by_its_cause_and_keeps_its_context() -> None:
    tracker = TransitionTracker()
    context = EdgeContext(
        cause=Cause.OTHER,
        controller="mom",
        ksmtuned_threshold_bytes=6 * 2**30,
        ksmtuned_committed_bytes=20 * 2**30,
        ksmtuned_free_bytes=None,  # not observed
    )
    assert not tracker.is_edge(1)  # the first look is not an edge
    tracker.observe(0, MEM, 1.0)
    assert tracker.is_edge(1) and not tracker.is_edge(4)  # 4: stopped, offline bit
    t = tracker.observe(1, MEM, 2.0, context)
    assert t is not None
    assert (t.cause, t.controller, t.ksmtuned_free_bytes) == (Cause.OTHER, "mom", None)
    assert t.ksmtuned_threshold_bytes == 6 * 2**30 and t.ksmtuned_committed_bytes == 20 * 2**30
    counts = tracker.state().counts
    assert counts[RunState.RUNNING, Cause.OTHER] == 1 and sum(counts.values()) == 1
    d = t.to_json()
    assert (d["cause"], d["controller"], d["ksmtuned_free_bytes"]) == ("other", "mom", None)
    assert Transition.from_json(d) == t
    # The log line's fields leave out what was not observed.
    fields = t.log_fields()
    assert fields["cause"] == "other" and fields["controller"] == "mom"
    assert fields["ksmtuned_threshold_bytes"] == 6 * 2**30
    assert "ksmtuned_free_bytes" not in fields


def test_a_history_saved_before_causes_reads_as_unknown() -> None:
    old = {
        "timestamp": 5.0,
        "from": "stopped",
        "to": "running",
        "run": 1,
        "mem_total_bytes": MEM.total,
        "mem_used_bytes": MEM.used,
        "mem_free_bytes": MEM.free,
        "mem_available_bytes": MEM.available,
    }
    t = Transition.from_json(old)
    assert (t.cause, t.controller, t.ksmtuned_threshold_bytes) == (Cause.UNKNOWN, None, None)
