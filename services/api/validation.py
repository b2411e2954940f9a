"""Validation of client input: every problem becomes a FieldViolation naming the field.

Functions collect all violations of a request before raising, so a form can show every mistake at
once, and return normalized values (defaults filled in) so what is stored is what GetTask shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from schedcore import pb
from schedcore.errors import FieldViolation, InvalidArgument, quote
from schedcore.netpolicy import AddressPolicy
from schedcore.schedule import Cron, ScheduleError, Window
from schedcore.sealing import is_sealed
from schedcore.store.keys import EXECUTION_ID, NAMESPACE, TASK_ID
from schedcore.timeutil import MAX_MS, duration_to_ms, ms_to_duration, ts_to_ms
from services.api.urlcheck import CONTROL, url_problem

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_LABELS = 64
MAX_LABEL_VALUE = 256
MAX_HEADERS = 64
# Bound of an http target's secret headers, names and values together (UTF-8 bytes).
MAX_SECRET_HEADER_BYTES = 16 * 1024
MAX_PROGRAM = 4096
MAX_ARGS = 256
MAX_ARG_BYTES = 32 * 1024
MAX_ENV = 64
MAX_ENV_VALUE_BYTES = 32 * 1024
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

LABEL_KEY = re.compile(r"^[a-z0-9][a-z0-9_.\-/]{0,62}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
REQUEST_ID = re.compile(rf"^[\x21-\x7e]{{1,{MAX_REQUEST_ID}}}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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
)


@dataclass
class Violations:
    items: list[FieldViolation] = field(default_factory=list)

    def add(self, path: str, description: str) -> None:
        self.items.append(FieldViolation(path, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def task_id(value: str, path: str = "id") -> str:
    if not value:
        raise InvalidArgument.field(path, "required")
    if not TASK_ID.match(value):
        raise InvalidArgument.field(path, "malformed task id (expected 16 lowercase hex characters)")
    return value


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


def page_size(value: int, path: str = "page_size") -> int:
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidArgument.field(path, f"must be between 1 and {MAX_PAGE_SIZE}, got {value}")
    return value


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


def _timestamp_ms(v: Violations, path: str, ts: Timestamp) -> int | None:
    ms = ts_to_ms(ts)
    if not 0 <= ms <= MAX_MS or not 0 <= ts.nanos < 1_000_000_000:
        v.add(path, "must be between 1970-01-01 and 2286-11-20")
        return None
    return ms


def _duration_ms(v: Violations, path: str, d: Duration, low_ms: int, high_ms: int) -> int | None:
    ms = duration_to_ms(d)
    if d.seconds < 0 or d.nanos < 0 or not low_ms <= ms <= high_ms:
        v.add(path, f"must be between {low_ms / 1000:g}s and {high_ms / 1000:g}s")
        return None
    return ms


def schedule(
    v: Violations, path: str, sched: pb.Schedule, now_ms: int, *, require_future: bool
) -> tuple[pb.Schedule, Window | None]:
    """Normalize a schedule and build its Window; violations are added to `v`."""
    out = pb.Schedule()
    kind = sched.WhichOneof("kind")
    if kind is None:
        v.add(path, "required: set once.run_time or cron.expression")
        return out, None
    if kind == "once":
        if not sched.once.HasField("run_time"):
            v.add(f"{path}.once.run_time", "required")
            return out, None
        ms = _timestamp_ms(v, f"{path}.once.run_time", sched.once.run_time)
        if ms is None:
            return out, None
        if require_future and ms <= now_ms:
            v.add(f"{path}.once.run_time", "is in the past")
            return out, None
        out.once.run_time.CopyFrom(sched.once.run_time)
        return out, Window.of(out)
    cron = sched.cron
    time_zone = cron.time_zone.strip() or "UTC"
    try:
        parsed = Cron.parse(cron.expression, time_zone)
    except ScheduleError as exc:
        where = "time_zone" if "time zone" in str(exc) else "expression"
        v.add(f"{path}.cron.{where}", str(exc))
        parsed = None
    start_ms = end_ms = None
    if cron.HasField("start_time"):
        start_ms = _timestamp_ms(v, f"{path}.cron.start_time", cron.start_time)
    if cron.HasField("end_time"):
        end_ms = _timestamp_ms(v, f"{path}.cron.end_time", cron.end_time)
        if end_ms is not None and start_ms is not None and end_ms <= start_ms:
            v.add(f"{path}.cron.end_time", "must be after start_time")
            end_ms = None
        elif end_ms is not None and require_future and end_ms <= now_ms:
            v.add(f"{path}.cron.end_time", "is in the past")
            end_ms = None
    if parsed is None:
        return out, None
    out.cron.expression = parsed.expression
    out.cron.time_zone = time_zone
    if start_ms is not None:
        out.cron.start_time.CopyFrom(cron.start_time)
    if end_ms is not None:
        out.cron.end_time.CopyFrom(cron.end_time)
    return out, Window.of(out)


def _target(
    v: Violations, target: pb.Target, max_bytes: int, addresses: AddressPolicy | None = None
) -> pb.Target:
    out = pb.Target()
    kind = target.WhichOneof("kind")
    if kind is None:
        v.add("task.target", "required: set log, http or command")
        return out
    if kind == "log":
        out.log.SetInParent()
        return out
    if kind == "command":
        out.command.CopyFrom(_command(v, target.command))
        return out
    http = target.http
    path = "task.target.http"
    url = http.url.strip()
    if not url:
        v.add(f"{path}.url", "required")
    elif (problem := url_problem(url, addresses)) is not None:
        v.add(f"{path}.url", problem)
    if http.method not in pb.HttpMethod.values():
        v.add(f"{path}.method", f"unknown method {http.method}")
    if len(http.headers) > MAX_HEADERS:
        v.add(f"{path}.headers", f"at most {MAX_HEADERS} headers")
    for name, value in http.headers.items():
        if not HEADER_NAME.match(name):
            v.add(f"{path}.headers", f"{quote(name)} is not a valid header name")
        elif CONTROL.search(value.replace("\t", "")):
            v.add(f"{path}.headers[{name}]", "value must not contain control characters (CR, LF)")
    _secret_headers(v, http)
    if len(http.body) > max_bytes:
        v.add(f"{path}.body", f"larger than {max_bytes} bytes")
    if http.expected_status and not 100 <= http.expected_status <= 599:
        v.add(f"{path}.expected_status", "must be 0 (any 2xx) or an HTTP status 100-599")
    out.http.CopyFrom(http)
    out.http.url = url
    if out.http.method == pb.HttpMethod.HTTP_METHOD_UNSPECIFIED:
        out.http.method = pb.HttpMethod.HTTP_METHOD_POST
    return out


def _secret_headers(v: Violations, http: pb.HttpTarget) -> None:
    """Like headers, and no name twice across both maps (case-insensitive). Messages name the
    headers, never their values."""
    path = "task.target.http.secret_headers"
    if len(http.secret_headers) > MAX_HEADERS:
        v.add(path, f"at most {MAX_HEADERS} secret headers")
    plain = {name.lower() for name in http.headers}
    seen: set[str] = set()
    size = 0
    for name, value in http.secret_headers.items():
        # A value sealed at rest (an update that leaves the target as it is) was counted in the
        # clear when it was sealed.
        size += len(name.encode()) + (0 if is_sealed(value) else len(value.encode()))
        if not HEADER_NAME.match(name):
            v.add(path, f"{quote(name)} is not a valid header name")
        elif CONTROL.search(value.replace("\t", "")):
            v.add(f"{path}[{name}]", "value must not contain control characters (CR, LF)")
        elif name.lower() in plain:
            v.add(f"{path}[{name}]", "also named in headers: a header is either secret or not")
        elif name.lower() in seen:
            v.add(f"{path}[{name}]", "named twice (header names are case-insensitive)")
        seen.add(name.lower())
    if size > MAX_SECRET_HEADER_BYTES:
        v.add(path, f"names and values larger than {MAX_SECRET_HEADER_BYTES} bytes")


def _command(v: Violations, command: pb.CommandTarget) -> pb.CommandTarget:
    path = "task.target.command"
    if not command.program:
        v.add(f"{path}.program", "required")
    elif len(command.program) > MAX_PROGRAM or CONTROL.search(command.program):
        v.add(f"{path}.program", f"must be at most {MAX_PROGRAM} characters without control characters")
    if len(command.args) > MAX_ARGS:
        v.add(f"{path}.args", f"at most {MAX_ARGS} arguments")
    for i, arg in enumerate(command.args):
        if len(arg.encode()) > MAX_ARG_BYTES:
            v.add(f"{path}.args[{i}]", f"larger than {MAX_ARG_BYTES} bytes")
        elif "\x00" in arg:
            v.add(f"{path}.args[{i}]", "must not contain NUL")
    if len(command.env) + len(command.secret_env) > MAX_ENV:
        v.add(f"{path}.env", f"at most {MAX_ENV} variables (env and secret_env together)")
    for field_name, variables in (("env", command.env), ("secret_env", command.secret_env)):
        for name, value in variables.items():
            # Messages name the variables, never their values. A value sealed at rest (an update
            # that leaves the target as it is) was checked in the clear when it was sealed.
            if not ENV_NAME.match(name):
                v.add(
                    f"{path}.{field_name}", f"{quote(name)} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
                )
            elif field_name == "secret_env" and name in command.env:
                v.add(f"{path}.secret_env[{name}]", "also named in env: a variable is either secret or not")
            elif field_name == "secret_env" and is_sealed(value):
                continue
            elif len(value.encode()) > MAX_ENV_VALUE_BYTES or "\x00" in value:
                v.add(
                    f"{path}.{field_name}[{name}]", f"must be at most {MAX_ENV_VALUE_BYTES} bytes without NUL"
                )
    if command.working_dir and (not command.working_dir.startswith("/") or "\x00" in command.working_dir):
        v.add(f"{path}.working_dir", "must be an absolute path")
    elif len(command.working_dir) > MAX_PROGRAM:
        v.add(f"{path}.working_dir", f"must be at most {MAX_PROGRAM} characters")
    out = pb.CommandTarget()
    out.CopyFrom(command)
    return out


def _retry(v: Violations, policy: pb.RetryPolicy) -> pb.RetryPolicy:
    path = "task.retry_policy"
    attempts = policy.max_attempts or 1
    if not 1 <= attempts <= MAX_ATTEMPTS:
        v.add(f"{path}.max_attempts", f"must be between 1 and {MAX_ATTEMPTS}")
    initial = DEFAULT_INITIAL_BACKOFF_MS
    if policy.HasField("initial_backoff"):
        initial = (
            _duration_ms(v, f"{path}.initial_backoff", policy.initial_backoff, 1, MAX_BACKOFF_MS) or initial
        )
    maximum = max(DEFAULT_MAX_BACKOFF_MS, initial)
    if policy.HasField("max_backoff"):
        got = _duration_ms(v, f"{path}.max_backoff", policy.max_backoff, 1, MAX_BACKOFF_MS)
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
    name = task_in.name.strip()
    if not name:
        v.add("task.name", "required")
    elif len(name) > MAX_NAME:
        v.add("task.name", f"longer than {MAX_NAME} characters")
    elif CONTROL.search(name):
        v.add("task.name", "must not contain control characters")
    spec.name = name
    if task_in.namespace and not NAMESPACE.match(task_in.namespace):
        v.add("task.namespace", NAMESPACE_RULE)
    spec.namespace = task_in.namespace
    if len(task_in.description) > MAX_DESCRIPTION:
        v.add("task.description", f"longer than {MAX_DESCRIPTION} characters")
    spec.description = task_in.description
    if len(task_in.labels) > MAX_LABELS:
        v.add("task.labels", f"at most {MAX_LABELS} labels")
    for key, value in task_in.labels.items():
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
    spec.labels.update(task_in.labels)
    sched, window = schedule(v, "task.schedule", task_in.schedule, now_ms, require_future=require_future)
    spec.schedule.CopyFrom(sched)
    spec.target.CopyFrom(_target(v, task_in.target, max_payload_bytes, addresses))
    if task_in.HasField("payload"):
        size = task_in.payload.ByteSize()
        if size > max_payload_bytes:
            v.add("task.payload", f"{size} bytes serialized, more than the limit of {max_payload_bytes}")
        else:
            spec.payload.CopyFrom(task_in.payload)
    timeout_ms = DEFAULT_TIMEOUT_MS
    if task_in.HasField("timeout"):
        timeout_ms = _duration_ms(v, "task.timeout", task_in.timeout, 1, MAX_TIMEOUT_MS) or timeout_ms
    spec.timeout.CopyFrom(ms_to_duration(timeout_ms))
    spec.retry_policy.CopyFrom(_retry(v, task_in.retry_policy))
    v.raise_if_any()
    assert window is not None
    return ValidTask(spec, window)


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


def _is_set(task_in: pb.Task, name: str) -> bool:
    if name == "labels":
        return len(task_in.labels) > 0
    if name in ("name", "description"):
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
        ms = _duration_ms(v, path, d, 60_000, max_minutes * 60_000)
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
