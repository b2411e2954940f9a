"""The task form's values, to and from a Task: pure functions, so they are tested without a page.

Widget values live in Streamlit's session state under the keys below (prefix `e_`); `to_task`
builds the Task the api receives and collects client-side errors per widget key, and
`widget_for` maps the field path an api error names to the widget that shows it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from schedcore import pb
from ui import alertform, fielderrors
from ui import format as fmt

RECURRING, INTERVAL, ONE_TIME = "Recurring (cron)", "Every (interval)", "One time"
LOG, HTTP = "Log (record the payload)", "HTTP request"
# Shown only when editing a command task: the form keeps its target as it is (schedctl or the
# api change programs; the form does not).
COMMAND = "Command (kept as it is)"
METHODS = ["POST", "GET", "PUT", "PATCH", "DELETE", "HEAD"]

# Api field path (prefix) -> widget key; the longest matching prefix wins.
FIELD_WIDGETS = {
    "task.name": "e_name",
    "task.description": "e_desc",
    "task.labels": "e_labels",
    "task.schedule": "e_kind",
    "task.schedule.cron": "e_cron",
    "task.schedule.cron.expression": "e_cron",
    "task.schedule.cron.time_zone": "e_tz",
    "task.schedule.interval": "e_every",
    "task.schedule.interval.every": "e_every",
    "task.schedule.once": "e_time",
    "task.schedule.once.run_time": "e_time",
    "task.target": "e_target",
    "task.target.http.method": "e_method",
    "task.target.http.url": "e_url",
    "task.target.http.headers": "e_headers",
    "task.target.http.secret_headers": "e_secret_headers",
    "task.target.http.body": "e_body",
    "task.target.http.expected_status": "e_expected",
    "task.payload": "e_payload",
    "task.timeout": "e_timeout",
    "task.retry_policy": "e_attempts",
    "task.retry_policy.max_attempts": "e_attempts",
    "task.retry_policy.initial_backoff": "e_backoff",
    "task.retry_policy.max_backoff": "e_max_backoff",
    "task.retry_policy.backoff_multiplier": "e_multiplier",
    "task.max_jitter": "e_jitter",
    "task.pause_after_failures": "e_pause_after",
    "task.overlap": "e_overlap",
    "task.overlap.max_concurrent": "e_max_concurrent",
    "task.catch_up": "e_catch_up",
    "task.catch_up.limit": "e_catch_up_limit",
    "task.catch_up.window": "e_catch_up_window",
    **alertform.FIELD_WIDGETS,
}

# The policies' choices as the form shows them (docs/scheduling.md, "Overlap" and "Catch-up").
OVERLAP_CHOICES = {
    "Allow": pb.OverlapPolicy.OVERLAP_POLICY_ALLOW,
    "Skip": pb.OverlapPolicy.OVERLAP_POLICY_SKIP,
    "Buffer one": pb.OverlapPolicy.OVERLAP_POLICY_BUFFER_ONE,
    "Cancel other": pb.OverlapPolicy.OVERLAP_POLICY_CANCEL_OTHER,
}
CATCH_UP_CHOICES = {
    "Run the earliest": pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_EARLIEST,
    "Run the latest": pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_LATEST,
    "Run all (up to the limit)": pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_ALL,
    "Skip all": pb.CatchUpPolicy.CATCH_UP_POLICY_SKIP_ALL,
}


def widget_for(path: str) -> str | None:
    """The widget that shows an error about `path` (None: shown above the form)."""
    return fielderrors.widget_for(FIELD_WIDGETS, path)


def defaults(now: datetime, zone: str = "UTC") -> dict[str, Any]:
    """A new task's form: hourly cron, log target, the api's defaults for timeout and retries."""
    later = (now.astimezone(ZoneInfo(zone)) + timedelta(hours=1)).replace(second=0, microsecond=0)
    return {
        "e_name": "",
        "e_desc": "",
        "e_labels": "",
        "e_kind": RECURRING,
        "e_cron": "0 * * * *",
        "e_tz": zone,
        "e_every": 300.0,
        # The stored interval (serialized IntervalSchedule) an edit keeps its phase and end from.
        "e_interval": None,
        "e_date": later.date(),
        # Hours and minutes (Streamlit's time picker steps by a minute at least) and the seconds.
        "e_time": later.time(),
        "e_second": 0,
        "e_target": LOG,
        "e_method": "POST",
        "e_url": "",
        "e_headers": "",
        "e_secret_headers": "",
        # How many signing secrets the task being edited has: the form sends that many empty
        # strings, which keep them (schedctl or the api set them; the form does not).
        "e_signing": 0,
        "e_command": None,
        "e_body": "",
        "e_expected": 0,
        "e_payload": "{}",
        "e_timeout": 60.0,
        "e_attempts": 1,
        "e_backoff": 1.0,
        "e_max_backoff": 60.0,
        "e_multiplier": 2.0,
        "e_jitter": 0.0,
        "e_pause_after": 0,
        "e_overlap": "Allow",
        "e_max_concurrent": 0,
        "e_catch_up": "Run the earliest",
        "e_catch_up_limit": 10,
        "e_catch_up_window": 0.0,
        **alertform.defaults(),
    }


def _whole(value: Any) -> Any:
    """A payload read back, its whole numbers shown as typed: a Struct holds every number as a
    double, so `"rows": 3` comes back 3.0 (2**53 and beyond stay as they are)."""
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def from_task(task: pb.Task, now: datetime) -> dict[str, Any]:
    """The form's values for editing `task`."""
    values = defaults(now)
    values.update(
        e_name=task.name,
        e_desc=task.description,
        e_labels=fmt.labels(dict(task.labels)),
        e_payload=json.dumps(_whole(json_format.MessageToDict(task.payload)), indent=2)
        if task.HasField("payload")
        else "{}",
        e_timeout=task.timeout.ToMilliseconds() / 1000 if task.HasField("timeout") else 60.0,
        e_attempts=task.retry_policy.max_attempts or 1,
        e_backoff=task.retry_policy.initial_backoff.ToMilliseconds() / 1000 or 1.0,
        e_max_backoff=task.retry_policy.max_backoff.ToMilliseconds() / 1000 or 60.0,
        e_multiplier=task.retry_policy.backoff_multiplier or 2.0,
        e_jitter=task.max_jitter.ToMilliseconds() / 1000,
        e_overlap=_choice(OVERLAP_CHOICES, task.overlap.policy, "Allow"),
        e_max_concurrent=task.overlap.max_concurrent,
        e_pause_after=task.pause_after_failures,
        e_catch_up=_choice(CATCH_UP_CHOICES, task.catch_up.policy, "Run the earliest"),
        e_catch_up_limit=task.catch_up.limit or 10,
        e_catch_up_window=task.catch_up.window.ToMilliseconds() / 1000,
        **alertform.from_policy(task.alerts),
    )
    if task.schedule.HasField("cron"):
        values.update(
            e_kind=RECURRING, e_cron=task.schedule.cron.expression, e_tz=task.schedule.cron.time_zone or "UTC"
        )
    elif task.schedule.HasField("interval"):
        interval = task.schedule.interval
        values.update(
            e_kind=INTERVAL,
            e_every=interval.every.ToMilliseconds() / 1000,
            e_interval=interval.SerializeToString(),
        )
    else:
        at = datetime.fromtimestamp(task.schedule.once.run_time.ToMilliseconds() / 1000, UTC)
        values.update(
            e_kind=ONE_TIME,
            e_tz="UTC",
            e_date=at.date(),
            e_time=at.time().replace(second=0, microsecond=0),
            e_second=at.second,
        )
    if task.target.HasField("http"):
        http = task.target.http
        values.update(
            e_target=HTTP,
            e_method=pb.HttpMethod.Name(http.method or pb.HttpMethod.HTTP_METHOD_POST)[12:],
            e_url=http.url,
            e_headers="\n".join(f"{k}: {v}" for k, v in sorted(http.headers.items())),
            # Write-only: the api shows names only; a name left blank keeps its stored value.
            e_secret_headers="\n".join(f"{k}:" for k in sorted(http.secret_headers)),
            e_signing=len(http.signing_secrets),
            e_body=http.body.decode("utf-8", "replace"),
            e_expected=http.expected_status,
        )
    if task.target.HasField("command"):
        values.update(e_target=COMMAND, e_command=task.target.SerializeToString())
    return values


def schedule_of(values: dict[str, Any]) -> pb.Schedule:
    """The schedule the form describes (the api validates it). An interval keeps the stored
    phase (start time) and end of the task being edited; a new one starts now (the api's
    default)."""
    if values["e_kind"] == INTERVAL:
        out = pb.Schedule(interval=pb.IntervalSchedule())
        if values.get("e_interval"):
            out.interval.ParseFromString(values["e_interval"])
        out.interval.every.FromMilliseconds(round(float(values["e_every"] or 0) * 1000))
        return out
    if values["e_kind"] == RECURRING:
        return pb.Schedule(
            cron=pb.CronSchedule(expression=str(values["e_cron"]).strip(), time_zone=values["e_tz"])
        )
    clock = (values["e_time"] or time()).replace(second=int(values.get("e_second") or 0), microsecond=0)
    local = datetime.combine(values["e_date"] or date.today(), clock)
    at = local.replace(tzinfo=ZoneInfo(values["e_tz"]))
    out = pb.Schedule(once=pb.OneTimeSchedule())
    out.once.run_time.FromMilliseconds(int(at.timestamp() * 1000))
    return out


def to_task(values: dict[str, Any]) -> tuple[pb.Task, dict[str, str]]:
    """The Task the form describes, and client-side errors by widget key (nothing is sent when
    there are any)."""
    errors: dict[str, str] = {}
    task = pb.Task(name=str(values["e_name"]).strip(), description=str(values["e_desc"]))
    try:
        task.labels.update(fmt.parse_labels(values["e_labels"]))
    except ValueError as exc:
        errors["e_labels"] = str(exc)
    task.schedule.CopyFrom(schedule_of(values))
    try:
        payload = json.loads(values["e_payload"] or "{}")
        if not isinstance(payload, dict):
            raise ValueError('must be a JSON object, like {"key": "value"}')
        struct = Struct()
        struct.update(payload)
        if payload:
            task.payload.CopyFrom(struct)
    except (ValueError, TypeError) as exc:
        errors["e_payload"] = f"not valid JSON: {exc}"
    if values["e_target"] == HTTP:
        http = pb.HttpTarget(
            method=f"HTTP_METHOD_{values['e_method']}",
            url=str(values["e_url"]).strip(),
            body=str(values["e_body"]).encode(),
            expected_status=int(values["e_expected"] or 0),
        )
        try:
            http.headers.update(fmt.parse_headers(values["e_headers"]))
        except ValueError as exc:
            errors["e_headers"] = str(exc)
        try:
            http.secret_headers.update(fmt.parse_headers(values.get("e_secret_headers", "")))
        except ValueError as exc:
            errors["e_secret_headers"] = str(exc)
        http.signing_secrets.extend([""] * int(values.get("e_signing") or 0))
        task.target.http.CopyFrom(http)
    elif values["e_target"] == COMMAND and values.get("e_command"):
        task.target.ParseFromString(values["e_command"])
    else:
        task.target.log.SetInParent()
    task.timeout.FromMilliseconds(int(float(values["e_timeout"]) * 1000))
    task.retry_policy.max_attempts = int(values["e_attempts"])
    task.retry_policy.initial_backoff.FromMilliseconds(int(float(values["e_backoff"]) * 1000))
    task.retry_policy.max_backoff.FromMilliseconds(int(float(values["e_max_backoff"]) * 1000))
    task.retry_policy.backoff_multiplier = float(values["e_multiplier"])
    if jitter_ms := round(float(values.get("e_jitter") or 0) * 1000):
        task.max_jitter.FromMilliseconds(jitter_ms)
    _policies(values, task)
    if (alerts := alertform.to_policy(values)) is not None:
        task.alerts.CopyFrom(alerts)
    return task, errors


def _choice(choices: Mapping[str, int], value: int, default: str) -> str:
    return next((label for label, v in choices.items() if v == value), default)


def _policies(values: dict[str, Any], task: pb.Task) -> None:
    """Overlap and catch-up: stored only when they differ from the defaults."""
    overlap = OVERLAP_CHOICES[values.get("e_overlap") or "Allow"]
    limit = int(values.get("e_max_concurrent") or 0)
    if overlap != pb.OverlapPolicy.OVERLAP_POLICY_ALLOW or limit:
        task.overlap.CopyFrom(pb.Overlap(policy=overlap, max_concurrent=limit))
    task.pause_after_failures = int(values.get("e_pause_after") or 0)
    catch_up = CATCH_UP_CHOICES[values.get("e_catch_up") or "Run the earliest"]
    window_ms = round(float(values.get("e_catch_up_window") or 0) * 1000)
    if catch_up != pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_EARLIEST or window_ms:
        task.catch_up.policy = catch_up
        if catch_up == pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_ALL:
            task.catch_up.limit = int(values.get("e_catch_up_limit") or 10)
        if window_ms:
            task.catch_up.window.FromMilliseconds(window_ms)


UPDATE_PATHS = (
    "name",
    "description",
    "labels",
    "schedule",
    "target",
    "payload",
    "timeout",
    "retry_policy",
    "max_jitter",
    "overlap",
    "catch_up",
    "pause_after_failures",
    "alerts",
)
