"""RecentRate: the executor's pace, which sizes its prefetch (services/executor/core.py)."""

from __future__ import annotations

from services.executor.flow import RecentRate


def test_counts_events_of_the_last_window_only() -> None:
    rate = RecentRate(window_s=1.0)
    assert rate.per_second(100.0) == 0
    rate.add(100.0, 30)
    rate.add(100.55, 20)
    assert rate.per_second(100.6) == 50
    assert rate.per_second(101.05) == 20, "the first 30 are over a second old"
    assert rate.per_second(101.7) == 0, "nothing lately: no pace"
    rate.add(101.7)
    assert rate.per_second(101.7) == 1


def test_a_shorter_window_scales_to_per_second() -> None:
    rate = RecentRate(window_s=0.5)
    rate.add(10.0, 40)
    assert rate.per_second(10.1) == 80
