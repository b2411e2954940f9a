"""PreviewSchedule: fire times of cron (in a time zone, across DST) and one-time schedules."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from schedcore import pb
from tests.integration import helpers
from tests.integration.helpers import (
    TIMEOUT,
    dt_of,
    invalid,
    ms_of,
    now_ms,
    snapshot,
    ts_dt,
    ts_ms,
)

# The api once per module, and a client on a flushed Redis per test (see helpers.py).
api = helpers.api
stub = helpers.stub


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def cron(
    expression: str, time_zone: str = "", start: datetime | None = None, end: datetime | None = None
) -> pb.Schedule:
    schedule = pb.Schedule(cron=pb.CronSchedule(expression=expression, time_zone=time_zone))
    if start is not None:
        schedule.cron.start_time.CopyFrom(ts_dt(start))
    if end is not None:
        schedule.cron.end_time.CopyFrom(ts_dt(end))
    return schedule


def preview(stub, schedule: pb.Schedule, count: int = 0, after: datetime | None = None) -> list[datetime]:
    request = pb.PreviewScheduleRequest(schedule=schedule, count=count)
    if after is not None:
        request.after.CopyFrom(ts_dt(after))
    return [dt_of(t) for t in stub.PreviewSchedule(request, timeout=TIMEOUT).fire_times]


def test_cron_in_berlin_across_spring_forward(stub):
    # 2026-03-29 02:00 CET jumps to 03:00 CEST: 09:00 local is 08:00 UTC before, 07:00 UTC after.
    got = preview(stub, cron("0 9 * * *", "Europe/Berlin"), count=4, after=utc(2026, 3, 27, 12))
    assert got == [utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7), utc(2026, 3, 31, 7)]
    # A fixed time inside the gap runs once, at the end of the gap (03:00 CEST = 01:00 UTC).
    got = preview(stub, cron("30 2 * * *", "Europe/Berlin"), count=3, after=utc(2026, 3, 27, 12))
    assert got == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]


def test_cron_in_berlin_across_fall_back(stub):
    # 2026-10-25 03:00 CEST goes back to 02:00 CET: 02:30 happens twice, the task runs once.
    got = preview(stub, cron("30 2 * * *", "Europe/Berlin"), count=3, after=utc(2026, 10, 23, 12))
    assert got == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # A wildcard hour keeps its real-time cadence through the repeated hour.
    got = preview(stub, cron("0 * * * *", "Europe/Berlin"), count=4, after=utc(2026, 10, 24, 23, 30))
    assert got == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]


def test_count_defaults_to_5_and_after_is_exclusive(stub):
    got = preview(stub, cron("0 * * * *"), after=utc(2030, 1, 1, 0))
    assert got == [utc(2030, 1, 1, h) for h in range(1, 6)]
    got = preview(stub, cron("0 * * * *"), after=utc(2030, 1, 1, 0, 0) - timedelta(milliseconds=1), count=2)
    assert got == [utc(2030, 1, 1, 0), utc(2030, 1, 1, 1)]
    assert len(preview(stub, cron("* * * * *"), count=100, after=utc(2030, 1, 1))) == 100
    assert len(preview(stub, cron("* * * * *"), count=1, after=utc(2030, 1, 1))) == 1


def test_default_after_is_now(stub):
    before = now_ms()
    got = preview(stub, cron("* * * * * *"), count=3)  # every second (seconds field last)
    assert len(got) == 3
    first = round(got[0].timestamp() * 1000)
    assert before < first <= now_ms() + 1000
    assert [b - a for a, b in itertools.pairwise(got)] == [timedelta(seconds=1)] * 2


def test_time_zone_macro_and_seconds(stub):
    # @daily in Tokyo (UTC+9, no DST): local midnight is 15:00 UTC the day before.
    got = preview(stub, cron("@daily", "Asia/Tokyo"), count=2, after=utc(2030, 6, 1))
    assert got == [utc(2030, 6, 1, 15), utc(2030, 6, 2, 15)]
    # Six fields: seconds last.
    got = preview(stub, cron("0 12 * * * 30"), count=2, after=utc(2030, 6, 1))
    assert got == [utc(2030, 6, 1, 12, 0, 30), utc(2030, 6, 2, 12, 0, 30)]


def test_start_and_end_bound_the_fire_times(stub):
    schedule = cron("0 0 * * *", start=utc(2030, 1, 10), end=utc(2030, 1, 12, 12))
    got = preview(stub, schedule, count=10, after=utc(2030, 1, 1))
    assert got == [utc(2030, 1, 10), utc(2030, 1, 11), utc(2030, 1, 12)]  # fewer than count
    assert preview(stub, schedule, count=10, after=utc(2030, 1, 13)) == []


def test_one_time(stub):
    run_at = utc(2030, 5, 5, 5, 5, 5)
    schedule = pb.Schedule(once=pb.OneTimeSchedule(run_time=ts_dt(run_at)))
    assert preview(stub, schedule, after=utc(2030, 1, 1)) == [run_at]
    assert preview(stub, schedule) == [run_at]
    assert preview(stub, schedule, after=run_at) == []
    soon = pb.Schedule(once=pb.OneTimeSchedule(run_time=ts_ms(now_ms() + 60_000)))
    assert [
        ms_of(t)
        for t in stub.PreviewSchedule(pb.PreviewScheduleRequest(schedule=soon), timeout=TIMEOUT).fire_times
    ] == [ms_of(soon.once.run_time)]


def test_preview_creates_nothing(stub, rds):
    before = snapshot(rds)
    preview(stub, cron("*/5 * * * *", "America/New_York"), count=100)
    invalid(lambda: preview(stub, cron("0 0 30 2 *")), "schedule.cron.expression")
    assert snapshot(rds) == before
