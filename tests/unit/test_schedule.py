"""Fire times of schedules against real tz-database transitions (the DST rules of
schedcore/schedule.py and docs/scheduling.md).

Transitions used (tzdata 2026):
- Europe/Berlin    spring 2026-03-29 01:00 UTC (02:00 CET -> 03:00 CEST),
                   fall   2026-10-25 01:00 UTC (03:00 CEST -> 02:00 CET: 02:00-03:00 repeats).
- America/New_York spring 2026-03-08 07:00 UTC (02:00 EST -> 03:00 EDT),
                   fall   2026-11-01 06:00 UTC (02:00 EDT -> 01:00 EST: 01:00-02:00 repeats).
"""

from __future__ import annotations

import functools
import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schedcore.schedule import MAX_EXPRESSION_LENGTH, Cron, ScheduleError, Window, load_zone

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def fires(expression: str, zone: str, after: datetime, count: int) -> list[datetime]:
    cron = Cron.parse(expression, zone)
    out: list[datetime] = []
    current = after
    for _ in range(count):
        nxt = cron.next_after(current)
        assert nxt is not None
        out.append(nxt)
        current = nxt
    return out


def fires_until(expression: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    cron = Cron.parse(expression, zone)
    out: list[datetime] = []
    current = after
    while True:
        nxt = cron.next_after(current)
        assert nxt is not None
        if nxt > until:
            return out
        out.append(nxt)
        current = nxt


def local(dt: datetime, zone: str) -> datetime:
    return dt.astimezone(ZoneInfo(zone))


# --- the zones' transitions are what the tests assume -------------------------------------------


@pytest.mark.parametrize(
    ("zone", "change", "before_h", "after_h"),
    [
        (BERLIN, utc(2026, 3, 29, 1), 1, 2),
        (BERLIN, utc(2026, 10, 25, 1), 2, 1),
        (NEW_YORK, utc(2026, 3, 8, 7), -5, -4),
        (NEW_YORK, utc(2026, 11, 1, 6), -4, -5),
    ],
)
def test_tz_database_has_the_transitions_these_tests_rely_on(
    zone: str, change: datetime, before_h: int, after_h: int
) -> None:
    z = ZoneInfo(zone)
    assert (change - timedelta(seconds=1)).astimezone(z).utcoffset() == timedelta(hours=before_h)
    assert change.astimezone(z).utcoffset() == timedelta(hours=after_h)


# --- fixed hour -----------------------------------------------------------------------------------


def test_spring_forward_fixed_hour_in_the_gap_fires_once_at_end_of_gap_berlin() -> None:
    got = fires("30 2 * * *", BERLIN, utc(2026, 3, 28, 12), 3)
    # 02:30 does not exist on 2026-03-29: it runs at 03:00 CEST = 01:00 UTC, once.
    assert got == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
    first = local(got[0], BERLIN)
    assert (first.date(), first.hour, first.minute) == (date(2026, 3, 29), 3, 0)
    assert [local(t, BERLIN).strftime("%H:%M") for t in got[1:]] == ["02:30", "02:30"]


def test_spring_forward_fixed_hour_in_the_gap_fires_once_at_end_of_gap_new_york() -> None:
    got = fires("30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), 2)
    assert got == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]  # 03:00 EDT, then 02:30 EDT


def test_spring_forward_several_gap_times_of_a_fixed_hour_fire_once() -> None:
    # 02:00, 02:15, 02:30, 02:45 all fall in the gap: one run at its end, not four.
    got = fires("*/15 2 * * *", BERLIN, utc(2026, 3, 28, 12), 2)
    assert got == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 0)]


def test_spring_forward_fixed_hour_fire_at_end_of_gap_is_not_repeated() -> None:
    # Starting exactly at the gap's end (the instant it just fired at) gives the next day.
    cron = Cron.parse("30 2 * * *", BERLIN)
    assert cron.next_after(utc(2026, 3, 29, 0, 59, 59)) == utc(2026, 3, 29, 1, 0)
    assert cron.next_after(utc(2026, 3, 29, 1, 0)) == utc(2026, 3, 30, 0, 30)


def test_spring_forward_fixed_hour_outside_the_gap_is_unaffected() -> None:
    # 03:30 exists on the spring day: it runs at 03:30 CEST (01:30 UTC), not at 01:00 UTC.
    assert fires("30 3 * * *", BERLIN, utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 1, 30),
    ]
    assert fires("30 1 * * *", BERLIN, utc(2026, 3, 28, 12), 2) == [
        utc(2026, 3, 29, 0, 30),  # 01:30 CET
        utc(2026, 3, 29, 23, 30),  # 01:30 CEST
    ]


def test_fall_back_fixed_hour_fires_once_in_the_first_pass_berlin() -> None:
    got = fires("30 2 * * *", BERLIN, utc(2026, 10, 24, 12), 3)
    # 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET): only the first counts.
    assert got == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]
    assert local(got[0], BERLIN).utcoffset() == timedelta(hours=2)  # CEST: the first pass


def test_fall_back_fixed_hour_fires_once_in_the_first_pass_new_york() -> None:
    # In New York the repeated hour is 01:00-02:00.
    got = fires("30 1 * * *", NEW_YORK, utc(2026, 10, 31, 12), 2)
    assert got == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]  # 01:30 EDT, then 01:30 EST
    # 02:30 is not repeated in New York: the day's only 02:30 is EST.
    assert fires("30 2 * * *", NEW_YORK, utc(2026, 10, 31, 12), 1) == [utc(2026, 11, 1, 7, 30)]


def test_fall_back_fixed_hour_after_first_pass_skips_the_second_pass() -> None:
    cron = Cron.parse("30 2 * * *", BERLIN)
    # From the first pass fire itself, and from later in the first pass (02:45 CEST).
    assert cron.next_after(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)
    assert cron.next_after(utc(2026, 10, 25, 0, 45)) == utc(2026, 10, 26, 1, 30)
    # Every minute of the repeated hour of a fixed-hour expression fires in the first pass only.
    got = fires_until("* 2 * * *", BERLIN, utc(2026, 10, 24, 23), utc(2026, 10, 25, 12))
    assert len(got) == 60
    assert got[0] == utc(2026, 10, 25, 0, 0) and got[-1] == utc(2026, 10, 25, 0, 59)


def test_fixed_hour_never_runs_in_the_second_pass_even_from_inside_it() -> None:
    # docs/scheduling.md: a fixed-hour task does not run in the second pass of a repeated hour,
    # even when its next run is computed from inside it (created, resumed, or the scheduler back
    # from an outage then): otherwise a task that ran at 02:30 CEST would run again at 02:30 CET.
    cron = Cron.parse("30 2 * * *", BERLIN)
    second_pass = utc(2026, 10, 25, 1, 10)  # 02:10 CET
    assert local(second_pass, BERLIN).fold == 1
    assert cron.next_after(second_pass) == utc(2026, 10, 26, 1, 30)
    assert cron.next_after(utc(2026, 10, 25, 0, 10)) == utc(2026, 10, 25, 0, 30)  # first pass
    # A fixed hour after the repeated one is not skipped: 03:00 CET still fires that day.
    three = Cron.parse("0 3 * * *", BERLIN)
    assert three.next_after(second_pass) == utc(2026, 10, 25, 2, 0)
    # A wildcard hour keeps running in the second pass.
    assert Cron.parse("*/30 * * * *", BERLIN).next_after(second_pass) == utc(2026, 10, 25, 1, 30)


# --- wildcard hour --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "change"),
    [
        (BERLIN, utc(2026, 3, 29, 1)),
        (BERLIN, utc(2026, 10, 25, 1)),
        (NEW_YORK, utc(2026, 3, 8, 7)),
        (NEW_YORK, utc(2026, 11, 1, 6)),
    ],
)
@pytest.mark.parametrize(
    ("expression", "step_min"),
    [("*/30 * * * *", 30), ("0 * * * *", 60), ("*/15 * * * *", 15), ("@hourly", 60)],
)
def test_wildcard_hour_keeps_real_time_cadence_across_transitions(
    zone: str, change: datetime, expression: str, step_min: int
) -> None:
    start, end = change - timedelta(hours=5), change + timedelta(hours=5)
    got = fires_until(expression, zone, start, end)
    step = timedelta(minutes=step_min)
    # Exactly every step in real time: no firing lost in the gap, none doubled or skipped in the
    # repeated hour, strictly increasing.
    assert got == [start + step * i for i in range(1, 10 * 60 // step_min + 1)]
    # The fire times are exactly the instants whose wall clock matches.
    for t in got:
        assert local(t, zone).minute % step_min == 0


def test_wildcard_hour_has_no_occurrence_in_the_spring_gap() -> None:
    got = fires_until("*/30 * * * *", BERLIN, utc(2026, 3, 28, 23), utc(2026, 3, 29, 2))
    walls = [local(t, BERLIN).strftime("%H:%M") for t in got]
    assert walls == ["00:30", "01:00", "01:30", "03:00", "03:30", "04:00"]


def test_wildcard_hour_runs_in_both_passes_of_the_repeated_hour() -> None:
    got = fires_until("*/30 * * * *", BERLIN, utc(2026, 10, 24, 23, 45), utc(2026, 10, 25, 2))
    walls = [local(t, BERLIN).strftime("%H:%M %Z") for t in got]
    assert walls == [
        "02:00 CEST",
        "02:30 CEST",
        "02:00 CET",
        "02:30 CET",
        "03:00 CET",
    ]
    got_ny = fires_until("0 * * * *", NEW_YORK, utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 8))
    assert [local(t, NEW_YORK).strftime("%H %Z") for t in got_ny] == [
        "01 EDT",
        "01 EST",
        "02 EST",
        "03 EST",
    ]


def test_hourly_fires_25_times_on_the_fall_back_date_and_23_on_the_spring_date() -> None:
    z = ZoneInfo(BERLIN)
    fall = fires_until("@hourly", BERLIN, utc(2026, 10, 23), utc(2026, 10, 27))
    spring = fires_until("@hourly", BERLIN, utc(2026, 3, 27), utc(2026, 3, 31))
    assert sum(t.astimezone(z).date() == date(2026, 10, 25) for t in fall) == 25
    assert sum(t.astimezone(z).date() == date(2026, 3, 29) for t in spring) == 23


def test_wildcard_hour_started_inside_the_second_pass_continues_there() -> None:
    cron = Cron.parse("*/15 * * * *", BERLIN)
    assert cron.next_after(utc(2026, 10, 25, 1, 5)) == utc(2026, 10, 25, 1, 15)  # 02:15 CET
    assert cron.next_after(utc(2026, 10, 25, 0, 50)) == utc(2026, 10, 25, 1, 0)  # 02:00 CET


@pytest.mark.parametrize(
    ("zone", "change"),
    [(BERLIN, utc(2026, 3, 29, 1)), (BERLIN, utc(2026, 10, 25, 1)), (NEW_YORK, utc(2026, 11, 1, 6))],
)
def test_six_fields_every_second_gives_consecutive_seconds_across_transitions(
    zone: str, change: datetime
) -> None:
    start = change - timedelta(seconds=10)
    got = fires("*/1 * * * * *", zone, start, 20)
    assert got == [start + timedelta(seconds=i) for i in range(1, 21)]


def test_six_fields_seconds_are_the_last_field() -> None:
    got = fires("* * * * * */10", "UTC", utc(2026, 5, 1, 12, 0, 3), 3)
    assert got == [utc(2026, 5, 1, 12, 0, 10), utc(2026, 5, 1, 12, 0, 20), utc(2026, 5, 1, 12, 0, 30)]
    # With seconds last, "*/10 * * * * *" is every second of every tenth minute.
    got = fires("*/10 * * * * *", "UTC", utc(2026, 5, 1, 12, 0, 58), 3)
    assert got == [utc(2026, 5, 1, 12, 0, 59), utc(2026, 5, 1, 12, 10, 0), utc(2026, 5, 1, 12, 10, 1)]
    # "0 30 * * * *": minute 0 (first field), second 30 (last field).
    assert fires("0 * * * * 30", "UTC", utc(2026, 5, 1, 12, 0, 0), 2) == [
        utc(2026, 5, 1, 12, 0, 30),
        utc(2026, 5, 1, 13, 0, 30),
    ]


# --- macros ---------------------------------------------------------------------------------------


def test_daily_macro_is_local_midnight() -> None:
    got = fires("@daily", BERLIN, utc(2026, 3, 27, 12), 3)
    # 00:00 CET on 28 and 29 March (23:00 UTC the day before), 00:00 CEST on 30 March.
    assert got == [utc(2026, 3, 27, 23), utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)]
    assert fires("@midnight", BERLIN, utc(2026, 3, 27, 12), 3) == got


def test_daily_macro_at_a_midnight_spring_forward_runs_at_end_of_gap() -> None:
    # America/Santiago 2026-09-06: 00:00 -04 jumps to 01:00 -03 (04:00 UTC); midnight does not exist.
    got = fires("@daily", "America/Santiago", utc(2026, 9, 4, 12), 3)
    assert got == [utc(2026, 9, 5, 4), utc(2026, 9, 6, 4), utc(2026, 9, 7, 3)]
    assert local(got[1], "America/Santiago").strftime("%d %H:%M") == "06 01:00"


def test_macros_are_case_insensitive_and_classified() -> None:
    hourly = Cron.parse("@HOURLY", BERLIN)
    assert hourly.expression == "@hourly" and hourly.wildcard_hour
    for macro in ("@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"):
        assert not Cron.parse(macro.upper(), BERLIN).wildcard_hour, macro


def test_weekly_monthly_yearly_macros() -> None:
    assert fires("@weekly", "UTC", utc(2026, 5, 1), 2) == [utc(2026, 5, 3), utc(2026, 5, 10)]  # Sundays
    assert fires("@monthly", "UTC", utc(2026, 5, 1), 2) == [utc(2026, 6, 1), utc(2026, 7, 1)]
    assert fires("@yearly", BERLIN, utc(2026, 5, 1), 1) == [utc(2026, 12, 31, 23)]


def test_expression_whitespace_is_normalized() -> None:
    cron = Cron.parse("  */5\t*  * *\n* ", "UTC")
    assert cron.expression == "*/5 * * * *"
    assert cron.wildcard_hour


def test_hour_field_wildcard_classification() -> None:
    assert Cron.parse("0 */2 * * *").wildcard_hour
    assert Cron.parse("0 * * * * *").wildcard_hour  # six fields: the hour is still the 2nd field
    assert not Cron.parse("0 2 * * *").wildcard_hour
    assert not Cron.parse("0 1-3 * * *").wildcard_hour
    assert not Cron.parse("*/5 2 * * *").wildcard_hour  # the minute being a wildcard does not count


# --- invalid expressions and zones ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("not a cron", "expected 5 fields"),
        ("a b c d e", "is not a valid cron expression"),
        ("60 * * * *", "is not a valid cron expression"),
        ("* 24 * * *", "is not a valid cron expression"),
        ("*/0 * * * *", "is not a valid cron expression"),
        ("0 0 * * 8", "is not a valid cron expression"),
        ("* * * * * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or 6"),
        ("* * * *", "got 4"),
        ("0 0 30 2 *", "never matches a date"),
        ("0 0 31 4 *", "never matches a date"),
        ("@fortnightly", "unknown macro '@fortnightly'"),
        ("", "must not be empty"),
        ("   \t ", "must not be empty"),
        ("*" + " *" * 128, f"longer than {MAX_EXPRESSION_LENGTH} characters"),
        ("0" * 300 + " * * * *", f"longer than {MAX_EXPRESSION_LENGTH} characters"),
    ],
)
def test_invalid_expressions_raise_schedule_error_with_a_reason(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        Cron.parse(expression, "UTC")
    assert message in str(info.value)


def test_seven_fields_reports_the_count() -> None:
    with pytest.raises(ScheduleError, match="got 7"):
        Cron.parse("0 0 1 1 * 30 2030", "UTC")


def test_an_expression_at_the_length_limit_is_accepted() -> None:
    expression = "0 0 * * " + ",".join(["1"] * 124)
    assert len(expression) == MAX_EXPRESSION_LENGTH - 1
    Cron.parse(expression + " ", "UTC")  # trailing space is normalized away


def test_leap_day_expression_is_valid() -> None:
    assert fires("0 0 29 2 *", "UTC", utc(2026, 1, 1), 1) == [utc(2028, 2, 29)]


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus", "Europe/", "europe/berlin", "../../etc/passwd", "/etc/localtime"]
)
def test_unknown_time_zone(zone: str) -> None:
    with pytest.raises(ScheduleError, match="unknown IANA time zone"):
        Cron.parse("0 * * * *", zone)
    with pytest.raises(ScheduleError) as info:
        load_zone(zone)
    assert repr(zone) in str(info.value)


def test_empty_time_zone_means_utc() -> None:
    assert Cron.parse("0 12 * * *", "").next_after(utc(2026, 7, 1)) == utc(2026, 7, 1, 12)


def test_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)


# --- Window ---------------------------------------------------------------------------------------


def test_window_once() -> None:
    w = Window(once_ms=10_000)
    assert w.next_after_ms(0) == 10_000
    assert w.next_after_ms(9_999) == 10_000
    assert w.next_after_ms(10_000) is None
    assert w.preview_ms(0, 5) == [10_000]


def test_window_start_is_inclusive_and_moves_the_first_fire() -> None:
    cron = Cron.parse("0 * * * *", "UTC")
    start = ms(utc(2026, 6, 1, 12))
    w = Window(cron=cron, start_ms=start)
    assert w.next_after_ms(ms(utc(2026, 1, 1))) == start  # a fire exactly at start counts
    assert w.next_after_ms(start) == ms(utc(2026, 6, 1, 13))
    w2 = Window(cron=cron, start_ms=start + 1)
    assert w2.next_after_ms(ms(utc(2026, 1, 1))) == ms(utc(2026, 6, 1, 13))
    # After the start the window is the plain schedule.
    assert w.next_after_ms(ms(utc(2026, 7, 1, 0, 30))) == ms(utc(2026, 7, 1, 1))


def test_window_end_is_inclusive_and_ends_the_schedule() -> None:
    cron = Cron.parse("0 * * * *", "UTC")
    end = ms(utc(2026, 6, 1, 14))
    w = Window(cron=cron, end_ms=end)
    assert w.next_after_ms(ms(utc(2026, 6, 1, 13, 30))) == end
    assert w.next_after_ms(end) is None
    assert Window(cron=cron, end_ms=end - 1).next_after_ms(ms(utc(2026, 6, 1, 13, 30))) is None


def test_window_preview_respects_start_end_and_count() -> None:
    cron = Cron.parse("*/30 * * * *", BERLIN)
    w = Window(cron=cron, start_ms=ms(utc(2026, 3, 29, 0, 10)), end_ms=ms(utc(2026, 3, 29, 2)))
    assert w.preview_ms(ms(utc(2026, 3, 28)), 100) == [
        ms(utc(2026, 3, 29, 0, 30)),
        ms(utc(2026, 3, 29, 1, 0)),  # 03:00 CEST: the gap is skipped, not filled
        ms(utc(2026, 3, 29, 1, 30)),
        ms(utc(2026, 3, 29, 2, 0)),
    ]
    assert w.preview_ms(ms(utc(2026, 3, 28)), 2) == [ms(utc(2026, 3, 29, 0, 30)), ms(utc(2026, 3, 29, 1))]
    assert Window(cron=cron).preview_ms(ms(utc(2026, 3, 28)), 0) == []


def test_window_preview_across_fall_back_of_a_fixed_hour() -> None:
    w = Window(cron=Cron.parse("30 2 * * *", BERLIN))
    assert w.preview_ms(ms(utc(2026, 10, 24)), 3) == [
        ms(utc(2026, 10, 24, 0, 30)),
        ms(utc(2026, 10, 25, 0, 30)),
        ms(utc(2026, 10, 26, 1, 30)),
    ]


def test_window_millisecond_boundaries() -> None:
    w = Window(cron=Cron.parse("*/1 * * * * *", "UTC"))
    t = ms(utc(2026, 6, 1, 12, 0, 5))
    assert w.next_after_ms(t - 1) == t
    assert w.next_after_ms(t) == t + 1000
    assert w.next_after_ms(t + 999) == t + 1000


# --- properties -----------------------------------------------------------------------------------

DST_ZONES = [
    BERLIN,
    NEW_YORK,
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # 30-minute shift
    "America/Santiago",  # transitions at midnight
]
EXPRESSIONS = [
    "*/15 * * * *",
    "*/30 * * * *",
    "0 * * * *",
    "@hourly",
    "*/7 * * * *",
    "30 2 * * *",
    "0 1 * * *",
    "15 0 * * *",
    "45 23 * * *",
    "*/20 2 * * *",
    "0,30 1-3 * * *",
    "@daily",
    "* * * * * */10",
]
PINNED_DAILY = ["30 2 * * *", "0 2 * * *", "0 1 * * *", "30 1 * * *", "15 0 * * *", "0 3 * * *", "@daily"]


@functools.cache
def transitions(zone: str) -> list[datetime]:
    z = ZoneInfo(zone)
    found: list[datetime] = []
    t = utc(2026, 1, 1)
    previous = t.astimezone(z).utcoffset()
    while t < utc(2028, 1, 1):
        offset = t.astimezone(z).utcoffset()
        if offset != previous:
            found.append(t)
            previous = offset
        t += timedelta(minutes=30)
    assert len(found) == 4, zone
    return found


@st.composite
def starts(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and a start instant, usually within a day and a half before one of its transitions."""
    zone = draw(st.sampled_from(DST_ZONES))
    if draw(st.booleans()):
        base = draw(st.sampled_from(transitions(zone)))
        offset = draw(st.integers(min_value=-36 * 3600 * 1000, max_value=2 * 3600 * 1000))
    else:
        base = utc(2026, 1, 1)
        offset = draw(st.integers(min_value=0, max_value=2 * 365 * 24 * 3600 * 1000))
    return zone, base + timedelta(milliseconds=offset)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(starts(), st.sampled_from(EXPRESSIONS))
def test_property_successive_fire_times_strictly_increase(
    start: tuple[str, datetime], expression: str
) -> None:
    zone, after = start
    cron = Cron.parse(expression, zone)
    z = ZoneInfo(zone)
    previous = after
    for _ in range(40):
        nxt = cron.next_after(previous)
        assert nxt is not None
        assert nxt > previous
        # A fire instant is a whole second, and its local wall clock matches the expression's
        # seconds/minutes (the gap's end is the only other possible wall time, at :00 or :30).
        assert nxt.microsecond == 0
        if expression.startswith("*/15 "):
            assert nxt.astimezone(z).minute % 15 == 0
        previous = nxt


@PROPERTY
@given(starts(), st.sampled_from(PINNED_DAILY))
def test_property_pinned_daily_never_fires_twice_on_one_local_date(
    start: tuple[str, datetime], expression: str
) -> None:
    zone, after = start
    got = fires(expression, zone, after, 4)
    dates = [local(t, zone).date() for t in got]
    assert len(set(dates)) == len(dates), [local(t, zone).isoformat() for t in got]
    # ...nor skips one: a wall time lost in a gap runs at the gap's end, on the same date.
    assert all(b - a == timedelta(days=1) for a, b in itertools.pairwise(dates))


@PROPERTY
@given(starts(), st.sampled_from(["*/15 * * * *", "*/30 * * * *", "*/1 * * * * *"]))
def test_property_wildcard_cadence_is_constant_in_real_time(
    start: tuple[str, datetime], expression: str
) -> None:
    zone, after = start
    got = fires(expression, zone, after, 30)
    gaps = {b - a for a, b in itertools.pairwise(got)}
    assert len(gaps) == 1, gaps


@PROPERTY
@given(starts(), st.sampled_from(EXPRESSIONS), st.floats(min_value=0.0, max_value=1.0))
def test_property_next_after_any_instant_between_two_fires_is_the_later_fire(
    start: tuple[str, datetime], expression: str, fraction: float
) -> None:
    zone, after = start
    cron = Cron.parse(expression, zone)
    first = cron.next_after(after)
    assert first is not None
    second = cron.next_after(first)
    assert second is not None
    between = first + (second - first) * fraction
    if between >= second:
        between = second - timedelta(microseconds=1)
    # The one documented exception: a fixed hour started inside the second pass of a repeated
    # hour may run there (docs/scheduling.md).
    assume(cron.wildcard_hour or between.astimezone(cron.zone).fold == 0)
    assert cron.next_after(between) == second


# --- Window.of: a stored schedule's one conversion (scheduler plan, api validation, resume) ---


def test_window_of_a_once_schedule() -> None:
    from schedcore import pb
    from schedcore.timeutil import ms_to_ts

    sched = pb.Schedule(once=pb.OneTimeSchedule(run_time=ms_to_ts(1_800_000_000_123)))
    assert Window.of(sched) == Window(once_ms=1_800_000_000_123)


def test_window_of_a_cron_schedule_shares_the_one_parse_cache() -> None:
    from schedcore import pb
    from schedcore.timeutil import ms_to_ts

    sched = pb.Schedule(
        cron=pb.CronSchedule(
            expression="*/5 * * * *",
            time_zone=BERLIN,
            start_time=ms_to_ts(1_800_000_000_000),
            end_time=ms_to_ts(1_900_000_000_000),
        )
    )
    w = Window.of(sched)
    assert w.cron is Cron.parse("*/5 * * * *", BERLIN)
    assert (w.start_ms, w.end_ms, w.once_ms) == (1_800_000_000_000, 1_900_000_000_000, None)
    # No zone stored reads as UTC; no bounds read as unbounded.
    bare = Window.of(pb.Schedule(cron=pb.CronSchedule(expression="0 * * * *")))
    assert bare == Window(cron=Cron.parse("0 * * * *", "UTC"))


@given(
    every=st.integers(1_000, 10 * 86_400_000),
    start=st.integers(0, 4_000_000_000_000),
    after=st.integers(0, 4_000_000_000_000),
)
def test_an_interval_fires_on_its_phase_first_strictly_after(every: int, start: int, after: int) -> None:
    w = Window(every_ms=every, start_ms=start)
    nxt = w.next_after_ms(after)
    assert nxt is not None and (nxt - start) % every == 0 and nxt >= start
    assert nxt > after and (nxt - every <= after or nxt == start)


def test_an_interval_ends_at_its_end_time_inclusive() -> None:
    w = Window(every_ms=1_000, start_ms=10_500, end_ms=13_500)
    assert w.preview_ms(0, 10) == [10_500, 11_500, 12_500, 13_500]
    assert w.next_after_ms(13_500) is None
