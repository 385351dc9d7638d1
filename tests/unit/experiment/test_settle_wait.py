"""The settle rule as the experiment waits on it, and the experiment's idle-ksmd check.

The experiment and the daemon share one rule, ksm_exporter.state.settle.SettleTracker (its
own cases are in tests/unit/state/test_settle.py). The cases here are those the
experiment's former copy of the rule was tested with, now against SettleTracker: looks
while KSM runs, one per full scan unless said otherwise.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ksm_exporter.experiment.settle_wait import IdleKsmd, idle_after
from ksm_exporter.state.settle import SettleTracker

RUNNING = 1


def settled_after_each(k: int, looks: list[tuple[int, int]]) -> list[bool]:
    """Feed (full_scans, pages_sharing) looks of a running KSM; settled after each."""
    tracker = SettleTracker(full_scans=k)
    out = []
    for t, (scans, sharing) in enumerate(looks):
        tracker.observe(float(t), RUNNING, scans, sharing)
        out.append(tracker.state().settled)
    return out


def test_not_settled_before_k_full_scans_even_when_flat() -> None:
    # Zero change settles too (a node with nothing to merge stays at 0), but only once
    # K full scans have completed since the first look.
    looks = [(10, 0), (11, 0), (12, 0), (13, 0)]
    assert settled_after_each(3, looks) == [False, False, False, True]


def test_growth_of_one_percent_or_more_is_not_settled() -> None:
    looks = [(0, 0), (1, 0), (2, 5000), (3, 9000), (4, 9100), (5, 9190), (6, 9195), (7, 9200)]
    # At scan 6 the window 9100..9195 moved by 95, just over 1% of 9195; at scan 7,
    # 9190..9200 is 0.1%.
    assert settled_after_each(2, looks) == [False] * 7 + [True]


def test_the_whole_window_counts_not_only_its_ends() -> None:
    # pages_sharing back where it was K scans ago, but it moved in between: not settled.
    looks = [(0, 1000), (1, 2000), (2, 1000), (3, 1000), (4, 1000)]
    assert settled_after_each(2, looks) == [False, False, False, False, True]


def test_several_scans_between_looks_start_the_window_at_the_latest_old_enough() -> None:
    # At scan 20 (K=3) the window starts at the look of scan 10, not of scan 0.
    assert settled_after_each(3, [(0, 0), (10, 500), (20, 501)]) == [False, False, True]


def test_counter_going_back_starts_over_even_when_settled() -> None:
    # full_scans went back: another ksmd (the module reloaded, the node rebooted).
    looks = [(100, 7), (101, 7), (5, 7), (6, 7)]
    assert settled_after_each(1, looks) == [False, True, False, True]


def test_shrinking_sharing_is_a_change_too() -> None:
    assert settled_after_each(1, [(0, 10000), (1, 9000), (2, 8950)]) == [False, False, True]


def within_tolerance(values: list[int]) -> bool:
    high, low = max(values), min(values)
    return high == low or high - low < 0.01 * high


@given(st.integers(1, 6), st.lists(st.integers(0, 10**7), min_size=1, max_size=40))
def test_one_look_per_scan_settles_exactly_when_the_last_k_scans_are_within_1_percent(
    k: int, sharing: list[int]
) -> None:
    settled = settled_after_each(k, list(enumerate(sharing)))
    for i, got in enumerate(settled):
        assert got == (i >= k and within_tolerance(sharing[i - k : i + 1]))


@given(
    st.integers(1, 4),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**5)), min_size=1, max_size=40),
)
def test_any_looks_settle_on_the_window_since_the_latest_scan_k_scans_ago(
    k: int, steps: list[tuple[int, int]]
) -> None:
    """Looks several per scan or several scans apart: a scan's sample is its first look;
    the window runs from the latest sample at least K scans old to now."""
    looks, scans = [], 0
    for advance, sharing in steps:
        scans += advance
        looks.append((scans, sharing))
    samples: list[tuple[int, int]] = []
    settled = settled_after_each(k, looks)
    assert len(settled) == len(looks)
    for (scans, sharing), got in zip(looks, settled):
        if not samples or scans > samples[-1][0]:
            samples.append((scans, sharing))
        old_enough = [i for i, (s, _) in enumerate(samples) if s <= scans - k]
        window = [v for _, v in samples[old_enough[-1] :]] if old_enough else []
        assert got == (bool(window) and within_tolerance(window))


def test_ksmd_without_progress_for_idle_after_seconds_is_idle() -> None:
    idle = IdleKsmd(idle_after=2.0)
    assert not idle.observe(0.0, 500, 3)
    assert not idle.observe(1.9, 500, 3)
    assert idle.observe(2.0, 500, 3)


def test_any_progress_restarts_the_idle_clock() -> None:
    idle = IdleKsmd(idle_after=2.0)
    idle.observe(0.0, 500, 3)
    assert not idle.observe(1.5, 600, 3)
    assert not idle.observe(3.0, 600, 3)
    assert not idle.observe(3.4, 600, 4)
    assert idle.observe(5.4, 600, 4)


def test_without_pages_scanned_idle_is_never_claimed() -> None:
    idle = IdleKsmd(idle_after=0.1)
    assert not any(idle.observe(t, None, 1) for t in (0.0, 1.0, 100.0))


def test_idle_after_follows_sleep_millisecs() -> None:
    assert idle_after(20) == 2.0
    assert idle_after(5000) == pytest.approx(16.0)
