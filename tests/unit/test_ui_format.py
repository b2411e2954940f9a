"""The dashboard's pure helpers: words for schedules, parsing of form fields, form <-> Task."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schedcore import pb
from ui import format as fmt
from ui import taskform as tf


def test_cron_words_puts_our_trailing_seconds_first_for_the_describer() -> None:
    assert fmt.cron_words("*/5 * * * *") == "Every 5 minutes"
    assert fmt.cron_words("* * * * * */10") == "Every 10 seconds"
    assert fmt.cron_words("0 9 * * 1-5") == "At 09:00, Monday through Friday"
    assert fmt.cron_words("not a cron") == ""


def test_parse_labels_and_headers() -> None:
    assert fmt.parse_labels(" team=ops, env = prod\nx=") == {"team": "ops", "env": "prod", "x": ""}
    with pytest.raises(ValueError, match="'team' is not key=value"):
        fmt.parse_labels("team")
    assert fmt.parse_headers("A: 1\n\nB:two: three") == {"A": "1", "B": "two: three"}
    with pytest.raises(ValueError, match="is not 'Name: value'"):
        fmt.parse_headers("no colon")


def test_durations_read_naturally() -> None:
    assert [fmt.millis(v) for v in (0, 999, 1500, 65_000, 7_260_000)] == [
        "0 ms",
        "999 ms",
        "1.5 s",
        "1 min 5 s",
        "2 h 1 min",
    ]
    assert fmt.millis(None) == "—"


def test_api_field_paths_map_to_the_most_specific_widget() -> None:
    assert tf.widget_for("task.schedule.cron.expression") == "e_cron"
    assert tf.widget_for("task.schedule.cron.time_zone") == "e_tz"
    assert tf.widget_for("task.schedule") == "e_kind"
    assert tf.widget_for("task.labels[Bad Key]") == "e_labels"
    assert tf.widget_for("task.target.http.headers[X]") == "e_headers"
    assert tf.widget_for("task.target.http.secret_headers[X]") == "e_secret_headers"
    assert tf.widget_for("task.retry_policy") == "e_attempts"
    assert tf.widget_for("request_id") is None


def test_form_round_trips_a_task() -> None:
    task = pb.Task(name="n", description="d", labels={"a": "b"})
    task.schedule.cron.expression = "0 3 * * *"
    task.schedule.cron.time_zone = "Asia/Tokyo"
    task.target.http.url = "https://example.com"
    task.target.http.method = pb.HttpMethod.HTTP_METHOD_PATCH
    task.target.http.headers["X-A"] = "1"
    task.target.http.body = b"hi"
    task.target.http.expected_status = 202
    task.payload.update({"k": [1, 2]})
    task.timeout.FromMilliseconds(2500)
    task.retry_policy.max_attempts = 4
    task.retry_policy.initial_backoff.FromMilliseconds(500)
    task.retry_policy.max_backoff.FromMilliseconds(30_000)
    task.retry_policy.backoff_multiplier = 3.0
    values = tf.from_task(task, datetime.now(UTC))
    again, errors = tf.to_task(values)
    assert errors == {}
    assert again == task


def test_secret_headers_show_names_only_and_go_back_blank() -> None:
    task = pb.Task(name="n")
    task.schedule.cron.expression = "0 3 * * *"
    task.target.http.url = "https://example.com"
    task.target.http.secret_headers.update({"Authorization": "", "X-Key": ""})  # as the api shows them
    values = tf.from_task(task, datetime.now(UTC))
    assert values["e_secret_headers"] == "Authorization:\nX-Key:"
    values["e_secret_headers"] += "\nX-New: fresh"
    again, errors = tf.to_task(values)
    assert errors == {}
    # Blank values tell the api to keep what it stores; the new one is sent.
    assert dict(again.target.http.secret_headers) == {"Authorization": "", "X-Key": "", "X-New": "fresh"}


def test_a_command_target_is_kept_as_it_is() -> None:
    task = pb.Task(name="n")
    task.schedule.cron.expression = "0 3 * * *"
    task.target.command.program = "/usr/bin/backup"
    task.target.command.args.extend(["--all", "$(not expanded)"])
    values = tf.from_task(task, datetime.now(UTC))
    assert values["e_target"] == tf.COMMAND
    again, errors = tf.to_task(values)
    assert errors == {}
    assert again.target == task.target


def test_one_time_schedule_is_read_in_its_zone() -> None:
    values = tf.defaults(datetime(2026, 3, 29, 0, 30, tzinfo=UTC), "Europe/Berlin")
    values.update(
        e_kind=tf.ONE_TIME, e_date=datetime(2026, 3, 29).date(), e_time=datetime(2026, 1, 1, 3, 0).time()
    )
    sched = tf.schedule_of(values)
    # 03:00 in Berlin on the day clocks spring forward is 01:00 UTC (CEST, +2).
    assert sched.once.run_time.ToMilliseconds() == int(
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp() * 1000
    )


def test_an_interval_keeps_its_phase_and_end_when_its_period_is_edited() -> None:
    task = pb.Task(name="i", schedule=pb.Schedule(interval=pb.IntervalSchedule()))
    task.schedule.interval.every.FromMilliseconds(90_000)
    task.schedule.interval.start_time.FromMilliseconds(1_900_000_000_123)
    task.schedule.interval.end_time.FromMilliseconds(1_900_100_000_000)
    values = tf.from_task(task, datetime(2030, 1, 1, tzinfo=UTC))
    assert values["e_kind"] == tf.INTERVAL and values["e_every"] == 90.0
    assert tf.schedule_of(values) == task.schedule
    values["e_every"] = 30.0
    edited = tf.schedule_of(values).interval
    assert edited.every.ToMilliseconds() == 30_000
    assert edited.start_time == task.schedule.interval.start_time
    assert edited.end_time == task.schedule.interval.end_time
    assert fmt.schedule(task.schedule).startswith("every 1 min 30 s from ")
    new = tf.defaults(datetime(2030, 1, 1, tzinfo=UTC)) | {"e_kind": tf.INTERVAL, "e_every": 5.0}
    fresh = tf.schedule_of(new).interval  # a new interval: the api anchors it now
    assert fresh.every.ToMilliseconds() == 5_000 and not fresh.HasField("start_time")
