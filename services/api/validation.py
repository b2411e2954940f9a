"""Validation of client input: every problem becomes a FieldViolation naming the field.

Functions collect all violations of a request before raising, so a form can show every mistake at
once, and return normalized values (defaults filled in) so what is stored is what GetTask shows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from schedcore import pb
from schedcore.errors import InvalidArgument, Violations, quote
from schedcore.netpolicy import AddressPolicy
from schedcore.schedule import (
    Window,
)
from schedcore.store.keys import EXECUTION_ID, NAMESPACE, TASK_ID
from schedcore.timeutil import MAX_MS, ms_to_duration, ts_to_ms
from services.api import alertcheck
from services.api.schedulecheck import catch_up, duration_ms, max_jitter, overlap, schedule
from services.api.targetcheck import target
from services.api.urlcheck import CONTROL

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_LABELS = 64
MAX_LABEL_VALUE = 256
MAX_REQUEST_ID = 128
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
DEFAULT_TIMEOUT_MS = 60_000
MAX_TIMEOUT_MS = 24 * 3600 * 1000
MAX_ATTEMPTS = 100
DEFAULT_INITIAL_BACKOFF_MS = 1000
DEFAULT_MAX_BACKOFF_MS = 60_000
MAX_BACKOFF_MS = 24 * 3600 * 1000
DEFAULT_MULTIPLIER = 2.0
MAX_PREVIEW = 100
# Most failures in a row a task may wait for before it pauses itself.
MAX_PAUSE_AFTER_FAILURES = 1000

LABEL_KEY = re.compile(r"^[a-z0-9][a-z0-9_.\-/]{0,62}$")
REQUEST_ID = re.compile(rf"^[\x21-\x7e]{{1,{MAX_REQUEST_ID}}}$")
# Fields a client may name in UpdateTask's update_mask.
MUTABLE_FIELDS = (
    "name",
    "description",
    "labels",
    "schedule",
    "target",
    "payload",
    "timeout",
    "retry_policy",
    "max_jitter",
    "catch_up",
    "overlap",
    "pause_after_failures",
    "alerts",
    "export_metrics",
)


def hex_id(value: str, path: str, what: str) -> str:
    """A server-assigned id (16 lowercase hex characters) of a `what`: a task, a channel."""
    if not value:
        raise InvalidArgument.field(path, "required")
    if not TASK_ID.match(value):
        raise InvalidArgument.field(path, f"malformed {what} id (expected 16 lowercase hex characters)")
    return value


# Fields of MUTABLE_FIELDS that are scalars: set by assignment, "set" when not at their default.
SCALARS = ("name", "description", "pause_after_failures", "export_metrics")


def task_id(value: str, path: str = "id") -> str:
    return hex_id(value, path, "task")


def execution_id(value: str, path: str = "id") -> str:
    if not value:
        raise InvalidArgument.field(path, "required")
    if not EXECUTION_ID.match(value):
        raise InvalidArgument.field(path, "malformed execution id")
    return value


def namespace(value: str, path: str = "namespace") -> str:
    """A namespace, or "" when none is given."""
    if value and not NAMESPACE.match(value):
        raise InvalidArgument.field(path, NAMESPACE_RULE)
    return value


NAMESPACE_RULE = "must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"


def etag(value: str, path: str = "etag") -> int | None:
    """The revision an etag names, or None when the client sent none."""
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise InvalidArgument.field(path, "malformed etag: send back the etag a read returned")
    return int(value)


def request_id(value: str) -> str:
    if value and not REQUEST_ID.match(value):
        raise InvalidArgument.field(
            "request_id", f"must be 1-{MAX_REQUEST_ID} printable ASCII characters without spaces"
        )
    return value


def page_size(value: int, path: str = "page_size", maximum: int = MAX_PAGE_SIZE) -> int:
    """A List request's page size: 0 means the default, above `maximum` means `maximum`
    (AIP-158: a client asking for more gets the most a page holds), negative is refused."""
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if value < 0:
        raise InvalidArgument.field(path, f"must not be negative (0: {DEFAULT_PAGE_SIZE}), got {value}")
    return min(value, maximum)


def time_range(
    request: pb.ListExecutionsRequest | pb.ListAuditEventsRequest,
) -> tuple[int | None, int | None]:
    """A list request's [start_time, end_time) in ms (None where unset), checked."""
    v = Violations()
    start = ts_to_ms(request.start_time) if request.HasField("start_time") else None
    end = ts_to_ms(request.end_time) if request.HasField("end_time") else None
    for name, ms in (("start_time", start), ("end_time", end)):
        if ms is not None and not 0 <= ms <= MAX_MS:
            v.add(name, "must be between 1970-01-01 and 2286-11-20")
    if start is not None and end is not None and end <= start:
        v.add("end_time", "must be after start_time")
    v.raise_if_any()
    return start, end


def _retry(v: Violations, policy: pb.RetryPolicy) -> pb.RetryPolicy:
    path = "task.retry_policy"
    attempts = policy.max_attempts or 1
    if not 1 <= attempts <= MAX_ATTEMPTS:
        v.add(f"{path}.max_attempts", f"must be between 1 and {MAX_ATTEMPTS}")
    initial = DEFAULT_INITIAL_BACKOFF_MS
    if policy.HasField("initial_backoff"):
        initial = (
            duration_ms(v, f"{path}.initial_backoff", policy.initial_backoff, 1, MAX_BACKOFF_MS) or initial
        )
    maximum = max(DEFAULT_MAX_BACKOFF_MS, initial)
    if policy.HasField("max_backoff"):
        got = duration_ms(v, f"{path}.max_backoff", policy.max_backoff, 1, MAX_BACKOFF_MS)
        if got is not None and got < initial:
            v.add(f"{path}.max_backoff", "must be at least initial_backoff")
        maximum = got or maximum
    multiplier = policy.backoff_multiplier or DEFAULT_MULTIPLIER
    if not 1.0 <= multiplier <= 10.0:  # also rejects NaN
        v.add(f"{path}.backoff_multiplier", "must be between 1.0 and 10.0")
    return pb.RetryPolicy(
        max_attempts=attempts,
        initial_backoff=ms_to_duration(initial),
        max_backoff=ms_to_duration(maximum),
        backoff_multiplier=multiplier,
    )


@dataclass(frozen=True)
class ValidTask:
    spec: pb.Task  # user-owned fields only, normalized
    window: Window


def task(
    task_in: pb.Task,
    now_ms: int,
    max_payload_bytes: int,
    *,
    require_future: bool = True,
    addresses: AddressPolicy | None = None,
) -> ValidTask:
    """Validate and normalize the user-owned fields of a task (CreateTask, UpdateTask).

    require_future: a one-time run_time or a cron end_time must lie after now_ms."""
    v = Violations()
    spec = pb.Task()
    spec.name = display_name(v, "task.name", task_in.name, MAX_NAME)
    if task_in.namespace and not NAMESPACE.match(task_in.namespace):
        v.add("task.namespace", NAMESPACE_RULE)
    spec.namespace = task_in.namespace
    if len(task_in.description) > MAX_DESCRIPTION:
        v.add("task.description", f"longer than {MAX_DESCRIPTION} characters")
    spec.description = task_in.description
    _labels(v, task_in.labels)
    spec.labels.update(task_in.labels)
    sched, window = schedule(v, "task.schedule", task_in.schedule, now_ms, require_future=require_future)
    spec.schedule.CopyFrom(sched)
    spec.target.CopyFrom(target(v, task_in.target, max_payload_bytes, addresses))
    if task_in.HasField("payload"):
        size = task_in.payload.ByteSize()
        if size > max_payload_bytes:
            v.add("task.payload", f"{size} bytes serialized, more than the limit of {max_payload_bytes}")
        else:
            spec.payload.CopyFrom(task_in.payload)
    timeout_ms = DEFAULT_TIMEOUT_MS
    if task_in.HasField("timeout"):
        timeout_ms = duration_ms(v, "task.timeout", task_in.timeout, 1, MAX_TIMEOUT_MS) or timeout_ms
    spec.timeout.CopyFrom(ms_to_duration(timeout_ms))
    spec.retry_policy.CopyFrom(_retry(v, task_in.retry_policy))
    if task_in.HasField("max_jitter") and (jitter := max_jitter(v, "task.max_jitter", task_in.max_jitter)):
        spec.max_jitter.CopyFrom(ms_to_duration(jitter))
    _policies(v, task_in, spec)
    v.raise_if_any()
    assert window is not None
    return ValidTask(spec, window)


def _policies(v: Violations, task_in: pb.Task, spec: pb.Task) -> None:
    """The policies of a task (catch-up, overlap, pause after failures, alerts) into `spec`."""
    if task_in.HasField("catch_up"):
        _unless_default(spec, "catch_up", catch_up(v, task_in.catch_up))
    if not 0 <= task_in.pause_after_failures <= MAX_PAUSE_AFTER_FAILURES:
        v.add("task.pause_after_failures", f"must be between 0 (never) and {MAX_PAUSE_AFTER_FAILURES}")
    else:
        spec.pause_after_failures = task_in.pause_after_failures
    spec.export_metrics = task_in.export_metrics
    if task_in.HasField("overlap"):
        _unless_default(spec, "overlap", overlap(v, task_in.overlap))
    if task_in.HasField("alerts"):  # which channels exist: alertcheck.channels_exist, in the store
        _unless_default(spec, "alerts", alertcheck.policy(v, task_in.alerts))


def _unless_default(spec: pb.Task, field: str, value: Message) -> None:
    """Set a message field of `spec`; one whose every field is at its default is stored unset."""
    if value.ByteSize():
        getattr(spec, field).CopyFrom(value)
    else:
        spec.ClearField(field)


def display_name(v: Violations, path: str, raw: str, limit: int) -> str:
    """A required name shown to people (a task's, a token's): stripped, at most `limit`
    characters, no control characters."""
    name = raw.strip()
    if not name:
        v.add(path, "required")
    elif len(name) > limit:
        v.add(path, f"longer than {limit} characters")
    elif CONTROL.search(name):
        v.add(path, "must not contain control characters")
    return name


def _labels(v: Violations, labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        v.add("task.labels", f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not LABEL_KEY.match(key):
            v.add(
                "task.labels",
                f"key {quote(key)} must be 1-63 characters of a-z 0-9 _ . - / starting with a-z or 0-9",
            )
        elif len(value) > MAX_LABEL_VALUE or CONTROL.search(value):
            v.add(
                f"task.labels[{key}]",
                f"value must be at most {MAX_LABEL_VALUE} characters without control characters",
            )


def update_paths(task_in: pb.Task, mask_paths: list[str]) -> list[str]:
    """The top-level fields an UpdateTask changes."""
    if not mask_paths:
        paths = [f for f in MUTABLE_FIELDS if _is_set(task_in, f)]
        if not paths:
            raise InvalidArgument.field("update_mask", "empty, and task sets no field to change")
        return paths
    if mask_paths == ["*"]:
        return list(MUTABLE_FIELDS)
    v = Violations()
    for path in mask_paths:
        if path == "namespace":
            v.add("update_mask", "'namespace' cannot be updated: a task's namespace is fixed at creation")
        elif path not in MUTABLE_FIELDS:
            v.add(
                "update_mask", f"{quote(path)} cannot be updated; updatable: {', '.join(MUTABLE_FIELDS)} or *"
            )
    v.raise_if_any()
    return list(dict.fromkeys(mask_paths))


def merged(stored: pb.Task, task_in: pb.Task, paths: list[str]) -> pb.Task:
    """The stored task with the fields `paths` names taken from `task_in` (unset there: cleared)."""
    out = pb.Task()
    out.CopyFrom(stored)
    for path in paths:
        out.ClearField(path)
        if path == "labels":
            out.labels.update(task_in.labels)
        elif path in SCALARS:
            setattr(out, path, getattr(task_in, path))
        elif task_in.HasField(path):
            getattr(out, path).CopyFrom(getattr(task_in, path))
    return out


def _is_set(task_in: pb.Task, name: str) -> bool:
    if name == "labels":
        return len(task_in.labels) > 0
    if name in SCALARS:
        return bool(getattr(task_in, name))
    return task_in.HasField(name)


def preview_count(count: int) -> int:
    if count == 0:
        return 5
    if not 1 <= count <= MAX_PREVIEW:
        raise InvalidArgument.field("count", f"must be between 1 and {MAX_PREVIEW}, got {count}")
    return count


def stats_window(request: pb.GetStatsRequest, max_minutes: int) -> tuple[int, int]:
    """(window, bucket width) of a GetStats request, in whole minutes."""
    v = Violations()
    minutes, width = 60, 0
    for path, d in (("window", request.window), ("bucket_width", request.bucket_width)):
        if not request.HasField(path):
            continue
        ms = duration_ms(v, path, d, 60_000, max_minutes * 60_000)
        if ms is not None and ms % 60_000:
            v.add(path, "must be a whole number of minutes")
        elif ms is not None and path == "window":
            minutes = ms // 60_000
        elif ms is not None:
            width = ms // 60_000
    if width > minutes:
        v.add("bucket_width", "must not be longer than the window")
    v.raise_if_any()
    return minutes, width or max(1, minutes // 60)
