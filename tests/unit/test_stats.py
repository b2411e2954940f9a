"""Lag histogram buckets and percentile estimates behind GetStats."""

from __future__ import annotations

from schedcore.store.stats import LAG_BOUNDS_MS, MinuteStats, lag_bucket, percentile_ms


def hist(**at: int) -> list[int]:
    """A histogram with counts at bucket indexes given as b<i>=count."""
    out = [0] * (len(LAG_BOUNDS_MS) + 1)
    for name, count in at.items():
        out[int(name[1:])] = count
    return out


def test_bucket_bounds_are_inclusive_upper_bounds() -> None:
    assert lag_bucket(0) == 0
    assert lag_bucket(-3) == 0, "a clock step backwards is no lag, not an error"
    assert lag_bucket(5) == 0
    assert lag_bucket(6) == 1
    assert lag_bucket(1000) == LAG_BOUNDS_MS.index(1000)
    assert lag_bucket(1001) == LAG_BOUNDS_MS.index(1000) + 1
    assert lag_bucket(10**9) == len(LAG_BOUNDS_MS), "beyond the last bound: the open bucket"


def test_percentile_of_nothing_is_none() -> None:
    assert percentile_ms(hist(), 0.5) is None


def test_percentile_interpolates_inside_the_bucket() -> None:
    i = LAG_BOUNDS_MS.index(100)  # (50, 100]
    h = hist(**{f"b{i}": 100})
    assert percentile_ms(h, 0.5) == 75
    assert percentile_ms(h, 1.0) == 100
    assert percentile_ms(h, 0.01) == 50 or percentile_ms(h, 0.01) == 51  # rounding at the low edge


def test_percentile_picks_the_bucket_the_rank_falls_in() -> None:
    low, high = LAG_BOUNDS_MS.index(10), LAG_BOUNDS_MS.index(5000)
    h = hist(**{f"b{low}": 98, f"b{high}": 2})
    assert 5 <= (percentile_ms(h, 0.5) or 0) <= 10
    assert 5 <= (percentile_ms(h, 0.98) or 0) <= 10
    assert 2500 <= (percentile_ms(h, 0.99) or 0) <= 5000


def test_open_bucket_reports_its_lower_bound() -> None:
    h = hist(**{f"b{len(LAG_BOUNDS_MS)}": 3})
    assert percentile_ms(h, 0.99) == LAG_BOUNDS_MS[-1]


def test_minute_stats_decode_and_add() -> None:
    a = MinuteStats.decode({b"s3": b"4", b"s4": b"1", b"l2": b"5", b"l99": b"7"})
    assert a.statuses == {3: 4, 4: 1}
    assert a.lag[2] == 5 and sum(a.lag) == 5, "an out-of-range bucket is ignored"
    b = MinuteStats.decode({b"s3": b"1", b"l2": b"1"})
    a.add(b)
    assert a.statuses == {3: 5, 4: 1}
    assert a.lag[2] == 6
