"""The settle rule: pages_sharing changing by less than 1% over the last K full scans."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ksm_exporter.experiment.settle_wait import IdleKsmd, SettleRule, idle_after


def test_not_settled_before_k_full_scans_even_when_flat() -> None:
    rule = SettleRule(scans=3)
    assert not rule.observe(10, 0)
    assert not rule.observe(11, 0)
    assert not rule.observe(12, 0)
    assert rule.observe(13, 0)  # a node with nothing to merge settles at 0
    assert rule.full_scans_seen == 3


def test_growth_of_one_percent_or_more_is_not_settled() -> None:
    rule = SettleRule(scans=2)
    for scans, sharing in [(0, 0), (1, 0), (2, 5000), (3, 9000), (4, 9100), (5, 9190)]:
        assert not rule.observe(scans, sharing)
    # 9190 -> 9200 over scans 5..7 is 0.1%: settled.
    assert not rule.observe(6, 9195)  # compared with scan 4 (9100): about 1%
    assert rule.observe(7, 9200)


def test_compares_with_the_reading_k_scans_back_not_the_previous_poll() -> None:
    rule = SettleRule(scans=3)
    rule.observe(0, 1000)
    # Many polls inside one scan count: the first reading of a count is kept.
    for sharing in (1000, 2000, 3000):
        assert not rule.observe(1, sharing)
    assert not rule.observe(2, 3000)
    assert not rule.observe(3, 3000)  # 1000 at scan 0 -> 3000: not settled
    assert not rule.observe(4, 3000)  # scan 1 was first read at 1000
    assert rule.observe(5, 3000)


def test_several_scans_between_polls_use_the_latest_reading_old_enough() -> None:
    rule = SettleRule(scans=3)
    rule.observe(0, 0)
    assert not rule.observe(10, 500)  # reference is scan 0: 0 -> 500
    assert rule.observe(20, 501)  # reference is scan 10: 0.2%


def test_counter_going_back_starts_over() -> None:
    rule = SettleRule(scans=1)
    rule.observe(100, 7)
    assert rule.observe(101, 7)
    assert not rule.observe(5, 7)
    assert rule.observe(6, 7)


def test_shrinking_sharing_is_a_change_too() -> None:
    rule = SettleRule(scans=1)
    rule.observe(0, 10000)
    assert not rule.observe(1, 9000)
    assert rule.observe(2, 8950)


@pytest.mark.parametrize("kw", [{"scans": 0}, {"tolerance": 0}, {"tolerance": 1.5}])
def test_rejects_meaningless_parameters(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SettleRule(**kw)  # type: ignore[arg-type]


@given(
    st.integers(1, 6),
    st.lists(st.integers(0, 10**7), min_size=1, max_size=40),
)
def test_settled_means_within_tolerance_of_k_scans_ago(k: int, sharing: list[int]) -> None:
    """One reading per full scan: settled exactly when the rule's definition holds."""
    rule = SettleRule(scans=k)
    for i, now in enumerate(sharing):
        settled = rule.observe(i, now)
        if i < k:
            assert not settled
        else:
            then = sharing[i - k]
            assert settled == (now == then or abs(now - then) < 0.01 * max(now, then))


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
