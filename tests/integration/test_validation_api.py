"""Every way a request is rejected: status code, a message naming the field, a google.rpc.BadRequest
detail naming it, and Redis left exactly as it was."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from schedcore import pb
from tests.integration import helpers
from tests.integration.helpers import (
    KEYS,
    TIMEOUT,
    create,
    cron_task,
    duration,
    invalid,
    list_all_tasks,
    now_ms,
    once_task,
    rpc_error,
    snapshot,
    ts_dt,
    ts_ms,
    violation_fields,
)

# The api once per module, and a client on a flushed Redis per test (see helpers.py).
api = helpers.api
stub = helpers.stub

UNKNOWN_TASK = "0123456789abcdef"
UNKNOWN_EXECUTION = "0123456789abcdef-1700000000000"
MAX_PAYLOAD = 256 * 1024


def _create(task: pb.Task, request_id: str = "") -> Callable[[object], object]:
    return lambda stub: stub.CreateTask(
        pb.CreateTaskRequest(task=task, request_id=request_id), timeout=TIMEOUT
    )


def _http(url: str = "https://example.com/x", **fields: object) -> pb.Task:
    task = once_task("http")
    task.target.http.CopyFrom(pb.HttpTarget(url=url, **fields))  # type: ignore[arg-type]
    return task


def _no_target() -> pb.Task:
    task = once_task("t")
    task.ClearField("target")
    return task


def _no_schedule() -> pb.Task:
    task = once_task("t")
    task.ClearField("schedule")
    return task


def _cron_window(start: datetime | None, end: datetime | None) -> pb.Task:
    task = cron_task("w", "0 * * * *")
    if start is not None:
        task.schedule.cron.start_time.CopyFrom(ts_dt(start))
    if end is not None:
        task.schedule.cron.end_time.CopyFrom(ts_dt(end))
    return task


def _interval(
    every_ms: int | None, start: datetime | None = None, end: datetime | None = None, nanos: int = 0
) -> pb.Task:
    task = pb.Task(
        name="i", schedule=pb.Schedule(interval=pb.IntervalSchedule()), target=pb.Target(log=pb.LogTarget())
    )
    if every_ms is not None:
        task.schedule.interval.every.FromMilliseconds(every_ms)
        task.schedule.interval.every.nanos += nanos
    if start is not None:
        task.schedule.interval.start_time.CopyFrom(ts_dt(start))
    if end is not None:
        task.schedule.interval.end_time.CopyFrom(ts_dt(end))
    return task


def _catch_up(**fields: object) -> pb.Task:
    return once_task("c", catch_up=pb.CatchUp(**fields))  # type: ignore[arg-type]


def _payload(size: int) -> pb.Task:
    task = once_task("p")
    task.payload.update({"d": "x" * size})
    return task


def _retry(**fields: object) -> pb.Task:
    return once_task("r", retry_policy=pb.RetryPolicy(**fields))  # type: ignore[arg-type]


# (case id, call, field the error must name)
CREATE_CASES: list[tuple[str, Callable[[object], object], str]] = [
    ("cron-invalid", _create(cron_task("c", "61 * * * *")), "task.schedule.cron.expression"),
    ("cron-garbage", _create(cron_task("c", "every day")), "task.schedule.cron.expression"),
    ("cron-7-fields", _create(cron_task("c", "0 0 * * * * *")), "task.schedule.cron.expression"),
    ("cron-empty", _create(cron_task("c", "")), "task.schedule.cron.expression"),
    ("cron-never-fires", _create(cron_task("c", "0 0 30 2 *")), "task.schedule.cron.expression"),
    (
        "cron-unknown-tz",
        _create(cron_task("c", "0 * * * *", "Mars/Olympus_Mons")),
        "task.schedule.cron.time_zone",
    ),
    ("once-in-past", _create(once_task("o", in_s=-60)), "task.schedule.once.run_time"),
    (
        "once-no-run-time",
        _create(
            pb.Task(
                name="o",
                schedule=pb.Schedule(once=pb.OneTimeSchedule()),
                target=pb.Target(log=pb.LogTarget()),
            )
        ),
        "task.schedule.once.run_time",
    ),
    (
        "end-before-start",
        _create(_cron_window(datetime(2031, 1, 2, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))),
        "task.schedule.cron.end_time",
    ),
    (
        "end-in-past",
        _create(_cron_window(None, datetime(2020, 1, 1, tzinfo=UTC))),
        "task.schedule.cron.end_time",
    ),
    ("interval-no-period", _create(_interval(None)), "task.schedule.interval.every"),
    ("interval-zero", _create(_interval(0)), "task.schedule.interval.every"),
    ("interval-negative", _create(_interval(-5000)), "task.schedule.interval.every"),
    ("interval-under-a-second", _create(_interval(999)), "task.schedule.interval.every"),
    ("interval-over-366-days", _create(_interval(366 * 86_400_000 + 1)), "task.schedule.interval.every"),
    ("interval-part-of-a-ms", _create(_interval(5000, nanos=1)), "task.schedule.interval.every"),
    (
        "interval-end-before-start",
        _create(_interval(60_000, datetime(2031, 1, 2, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))),
        "task.schedule.interval.end_time",
    ),
    (
        "interval-end-in-past",
        _create(_interval(60_000, None, datetime(2020, 1, 1, tzinfo=UTC))),
        "task.schedule.interval.end_time",
    ),
    ("catch-up-unknown-policy", _create(_catch_up(policy=9)), "task.catch_up.policy"),
    ("catch-up-limit-without-run-all", _create(_catch_up(limit=3)), "task.catch_up.limit"),
    ("catch-up-limit-over-100", _create(_catch_up(policy=4, limit=101)), "task.catch_up.limit"),
    ("catch-up-limit-negative", _create(_catch_up(policy=4, limit=-1)), "task.catch_up.limit"),
    ("catch-up-window-negative", _create(_catch_up(window={"seconds": -1})), "task.catch_up.window"),
    (
        "catch-up-window-over-366-days",
        _create(_catch_up(window={"seconds": 366 * 86_400 + 1})),
        "task.catch_up.window",
    ),
    ("overlap-unknown-policy", _create(once_task("o", overlap=pb.Overlap(policy=9))), "task.overlap.policy"),  # type: ignore[arg-type]
    (
        "overlap-max-concurrent-over-100",
        _create(once_task("o", overlap=pb.Overlap(max_concurrent=101))),
        "task.overlap.max_concurrent",
    ),
    (
        "overlap-max-concurrent-negative",
        _create(once_task("o", overlap=pb.Overlap(policy=2, max_concurrent=-1))),  # type: ignore[arg-type]
        "task.overlap.max_concurrent",
    ),
    ("pause-after-negative", _create(once_task("f", pause_after_failures=-1)), "task.pause_after_failures"),
    (
        "pause-after-over-1000",
        _create(once_task("f", pause_after_failures=1001)),
        "task.pause_after_failures",
    ),
    ("max-jitter-over-an-hour", _create(once_task("j", max_jitter={"seconds": 3601})), "task.max_jitter"),
    ("name-empty", _create(once_task("")), "task.name"),
    ("name-blank", _create(once_task("   ")), "task.name"),
    ("name-too-long", _create(once_task("n" * 201)), "task.name"),
    ("name-control", _create(once_task("a\nb")), "task.name"),
    ("description-too-long", _create(once_task("d", description="x" * 2001)), "task.description"),
    ("label-key-bad", _create(once_task("l", labels={"Bad Key": "v"})), "task.labels"),
    ("payload-too-big", _create(_payload(MAX_PAYLOAD + 16)), "task.payload"),
    ("target-missing", _create(_no_target()), "task.target"),
    ("schedule-missing", _create(_no_schedule()), "task.schedule"),
    ("url-ftp", _create(_http("ftp://example.com/file")), "task.target.http.url"),
    ("url-no-host", _create(_http("http:///path")), "task.target.http.url"),
    ("url-scheme-only", _create(_http("https://")), "task.target.http.url"),
    ("url-relative", _create(_http("/just/a/path")), "task.target.http.url"),
    ("url-space", _create(_http("https://example.com/a b")), "task.target.http.url"),
    # Denied by default (HTTP_DENY_NETWORKS): cloud metadata and link-local addresses.
    ("url-metadata", _create(_http("http://169.254.169.254/latest/meta-data/")), "task.target.http.url"),
    ("url-metadata-v6", _create(_http("http://[fd00:ec2::254]/latest/")), "task.target.http.url"),
    ("url-metadata-mapped", _create(_http("http://[::ffff:169.254.169.254]/")), "task.target.http.url"),
    ("url-space-host", _create(_http("https://exa mple.com/")), "task.target.http.url"),
    ("url-missing", _create(_http("")), "task.target.http.url"),
    ("url-bad-port", _create(_http("http://example.com:99999/")), "task.target.http.url"),
    ("header-name-space", _create(_http(headers={"Bad Header": "v"})), "task.target.http.headers"),
    ("header-name-colon", _create(_http(headers={"X-A:": "v"})), "task.target.http.headers"),
    (
        "header-value-crlf",
        _create(_http(headers={"X-A": "v\r\nInjected: 1"})),
        "task.target.http.headers[X-A]",
    ),
    ("header-value-lf", _create(_http(headers={"X-A": "v\nx"})), "task.target.http.headers[X-A]"),
    ("expected-status-99", _create(_http(expected_status=99)), "task.target.http.expected_status"),
    ("expected-status-600", _create(_http(expected_status=600)), "task.target.http.expected_status"),
    ("expected-status-negative", _create(_http(expected_status=-200)), "task.target.http.expected_status"),
    ("body-too-big", _create(_http(body=b"x" * (MAX_PAYLOAD + 1))), "task.target.http.body"),
    ("timeout-negative", _create(once_task("t", timeout=duration(-1))), "task.timeout"),
    ("timeout-zero", _create(once_task("t", timeout=duration(0))), "task.timeout"),
    ("timeout-over-24h", _create(once_task("t", timeout=duration(24 * 3600 + 1))), "task.timeout"),
    ("retry-101-attempts", _create(_retry(max_attempts=101)), "task.retry_policy.max_attempts"),
    ("retry-negative-attempts", _create(_retry(max_attempts=-1)), "task.retry_policy.max_attempts"),
    (
        "retry-max-below-initial",
        _create(_retry(initial_backoff=duration(10), max_backoff=duration(5))),
        "task.retry_policy.max_backoff",
    ),
    ("retry-multiplier", _create(_retry(backoff_multiplier=11.0)), "task.retry_policy.backoff_multiplier"),
    (
        "retry-initial-negative",
        _create(_retry(initial_backoff=duration(-2))),
        "task.retry_policy.initial_backoff",
    ),
    ("request-id-space", _create(once_task("r"), request_id="has space"), "request_id"),
    ("request-id-too-long", _create(once_task("r"), request_id="x" * 129), "request_id"),
    (
        "cron-window-without-occurrence",
        _create(
            _cron_window(
                datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC), datetime(2030, 1, 1, 0, 0, 50, tzinfo=UTC)
            )
        ),
        "task.schedule",
    ),
    ("too-many-labels", _create(once_task("l", labels={f"k{i}": "v" for i in range(65)})), "task.labels"),
    ("label-value-too-long", _create(once_task("l", labels={"k": "v" * 257})), "task.labels[k]"),
    ("http-method-unknown", _create(_http(method=42)), "task.target.http.method"),
    (
        "run-time-before-1970",
        _create(
            pb.Task(
                name="o",
                schedule=pb.Schedule(once=pb.OneTimeSchedule(run_time=Timestamp(seconds=-5))),
                target=pb.Target(log=pb.LogTarget()),
            )
        ),
        "task.schedule.once.run_time",
    ),
]

STATELESS_CASES: list[tuple[str, Callable[[object], object], str]] = [
    (
        "list-tasks-page-size-neg",
        lambda s: s.ListTasks(pb.ListTasksRequest(page_size=-1), timeout=TIMEOUT),
        "page_size",
    ),
    (
        "list-exec-page-size-neg",
        lambda s: s.ListExecutions(pb.ListExecutionsRequest(page_size=-1), timeout=TIMEOUT),
        "page_size",
    ),
    (
        "list-tasks-forged-token",
        lambda s: s.ListTasks(pb.ListTasksRequest(page_token="abc"), timeout=TIMEOUT),
        "page_token",
    ),
    (
        "list-tasks-forged-token-b64",
        lambda s: s.ListTasks(
            pb.ListTasksRequest(
                page_token=base64.urlsafe_b64encode(b"\0" * 16 + b'{"f":"x","k":"a","t":1}').decode()
            ),
            timeout=TIMEOUT,
        ),
        "page_token",
    ),
    (
        "list-exec-forged-token",
        lambda s: s.ListExecutions(pb.ListExecutionsRequest(page_token="not a token!"), timeout=TIMEOUT),
        "page_token",
    ),
    (
        "list-exec-bad-task-id",
        lambda s: s.ListExecutions(pb.ListExecutionsRequest(task_id="xyz"), timeout=TIMEOUT),
        "task_id",
    ),
    (
        "list-exec-start-before-1970",
        lambda s: s.ListExecutions(
            pb.ListExecutionsRequest(start_time=Timestamp(seconds=-1)), timeout=TIMEOUT
        ),
        "start_time",
    ),
    (
        "preview-after-before-1970",
        lambda s: s.PreviewSchedule(
            pb.PreviewScheduleRequest(
                schedule=pb.Schedule(cron=pb.CronSchedule(expression="* * * * *")),
                after=Timestamp(seconds=-1),
            ),
            timeout=TIMEOUT,
        ),
        "after",
    ),
    (
        "list-exec-end-before-start",
        lambda s: s.ListExecutions(
            pb.ListExecutionsRequest(start_time=ts_ms(2_000_000), end_time=ts_ms(1_000_000)), timeout=TIMEOUT
        ),
        "end_time",
    ),
    ("list-tasks-bad-state", lambda s: s.ListTasks(pb.ListTasksRequest(state=9), timeout=TIMEOUT), "state"),
    ("get-task-xyz", lambda s: s.GetTask(pb.GetTaskRequest(id="xyz"), timeout=TIMEOUT), "id"),
    ("get-task-empty", lambda s: s.GetTask(pb.GetTaskRequest(id=""), timeout=TIMEOUT), "id"),
    ("get-task-upper", lambda s: s.GetTask(pb.GetTaskRequest(id="0123456789ABCDEF"), timeout=TIMEOUT), "id"),
    ("delete-xyz", lambda s: s.DeleteTask(pb.DeleteTaskRequest(id="xyz"), timeout=TIMEOUT), "id"),
    ("pause-xyz", lambda s: s.PauseTask(pb.PauseTaskRequest(id="xyz"), timeout=TIMEOUT), "id"),
    ("resume-xyz", lambda s: s.ResumeTask(pb.ResumeTaskRequest(id="xyz"), timeout=TIMEOUT), "id"),
    ("run-xyz", lambda s: s.RunTask(pb.RunTaskRequest(id="xyz"), timeout=TIMEOUT), "id"),
    (
        "update-xyz",
        lambda s: s.UpdateTask(
            pb.UpdateTaskRequest(task=pb.Task(id="xyz", name="n"), update_mask=FieldMask(paths=["name"])),
            timeout=TIMEOUT,
        ),
        "task.id",
    ),
    ("get-execution-xyz", lambda s: s.GetExecution(pb.GetExecutionRequest(id="xyz"), timeout=TIMEOUT), "id"),
    (
        "get-execution-task-id-only",
        lambda s: s.GetExecution(pb.GetExecutionRequest(id=UNKNOWN_TASK), timeout=TIMEOUT),
        "id",
    ),
    (
        "preview-count-101",
        lambda s: s.PreviewSchedule(
            pb.PreviewScheduleRequest(
                schedule=pb.Schedule(cron=pb.CronSchedule(expression="* * * * *")), count=101
            ),
            timeout=TIMEOUT,
        ),
        "count",
    ),
    (
        "preview-count-neg",
        lambda s: s.PreviewSchedule(
            pb.PreviewScheduleRequest(
                schedule=pb.Schedule(cron=pb.CronSchedule(expression="* * * * *")), count=-1
            ),
            timeout=TIMEOUT,
        ),
        "count",
    ),
    (
        "preview-no-schedule",
        lambda s: s.PreviewSchedule(pb.PreviewScheduleRequest(), timeout=TIMEOUT),
        "schedule",
    ),
    (
        "preview-bad-cron",
        lambda s: s.PreviewSchedule(
            pb.PreviewScheduleRequest(schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 0 30 2 *"))),
            timeout=TIMEOUT,
        ),
        "schedule.cron.expression",
    ),
    (
        "preview-bad-tz",
        lambda s: s.PreviewSchedule(
            pb.PreviewScheduleRequest(
                schedule=pb.Schedule(cron=pb.CronSchedule(expression="* * * * *", time_zone="Nowhere/City"))
            ),
            timeout=TIMEOUT,
        ),
        "schedule.cron.time_zone",
    ),
]


@pytest.mark.parametrize("call, field", [c[1:] for c in CREATE_CASES], ids=[c[0] for c in CREATE_CASES])
def test_create_task_rejected(stub, rds, call, field):
    before = snapshot(rds)
    invalid(lambda: call(stub), field)
    assert snapshot(rds) == before
    assert list_all_tasks(stub) == []


@pytest.mark.parametrize("call, field", [c[1:] for c in STATELESS_CASES], ids=[c[0] for c in STATELESS_CASES])
def test_request_rejected(stub, call, field):
    invalid(lambda: call(stub), field)


def test_every_violation_is_reported(stub):
    task = _http("ftp://x", expected_status=1000)
    task.name = ""
    task.timeout.CopyFrom(duration(-5))
    task.retry_policy.max_attempts = 101
    err = invalid(lambda: create(stub, task), "task.name")
    assert set(violation_fields(err)) >= {
        "task.name",
        "task.target.http.url",
        "task.target.http.expected_status",
        "task.timeout",
        "task.retry_policy.max_attempts",
    }


def test_limits_are_inclusive(stub):
    """The edge of every limit is accepted, and max_attempts 0 means the default of 1."""
    assert create(stub, once_task("n" * 200)).name == "n" * 200
    assert create(stub, _retry(max_attempts=0)).retry_policy.max_attempts == 1
    assert create(stub, _retry(max_attempts=100)).retry_policy.max_attempts == 100
    same = create(stub, _retry(initial_backoff=duration(5), max_backoff=duration(5))).retry_policy
    assert same.initial_backoff.ToMilliseconds() == same.max_backoff.ToMilliseconds() == 5000
    # Only initial_backoff above the default max: max follows it.
    assert (
        create(stub, _retry(initial_backoff=duration(120))).retry_policy.max_backoff.ToMilliseconds()
        == 120_000
    )
    assert (
        create(stub, once_task("t", timeout=duration(24 * 3600))).timeout.ToMilliseconds() == 24 * 3600 * 1000
    )
    assert create(stub, _http(expected_status=100)).target.http.expected_status == 100
    assert create(stub, _http(expected_status=599)).target.http.expected_status == 599
    assert create(stub, _http(headers={"X-Tab": "a\tb"})).target.http.headers["X-Tab"] == "a\tb"
    big = _payload(MAX_PAYLOAD - 64)
    assert big.payload.ByteSize() <= MAX_PAYLOAD
    assert create(stub, big).payload == big.payload
    assert create(stub, once_task("r"), request_id="x" * 128).name == "r"
    assert stub.ListTasks(pb.ListTasksRequest(page_size=1000), timeout=TIMEOUT).tasks
    assert stub.ListTasks(pb.ListTasksRequest(page_size=1), timeout=TIMEOUT).tasks


# --- calls that reach the store -----------------------------------------------------------------


@dataclass
class World:
    active: pb.Task
    completed: pb.Task
    execution: pb.Execution
    exec_token: str


@pytest.fixture()
def world(stub, rds) -> World:
    active = create(stub, once_task("active"), request_id="req-active")
    completed = create(stub, cron_task("completed", "0 * * * *"))
    rds.hset(KEYS.task(completed.id), "state", int(pb.TaskState.TASK_STATE_COMPLETED))
    execution = stub.RunTask(pb.RunTaskRequest(id=active.id), timeout=TIMEOUT).execution
    stub.RunTask(pb.RunTaskRequest(id=active.id), timeout=TIMEOUT)
    page = stub.ListExecutions(pb.ListExecutionsRequest(task_id=active.id, page_size=1), timeout=TIMEOUT)
    assert page.next_page_token
    return World(active, completed, execution, page.next_page_token)


def _update(task: pb.Task, *paths: str) -> Callable[[object], object]:
    return lambda s: s.UpdateTask(
        pb.UpdateTaskRequest(task=task, update_mask=FieldMask(paths=list(paths))), timeout=TIMEOUT
    )


def _rejections(w: World) -> list[tuple[str, Callable[[object], object], grpc.StatusCode, str]]:
    """(case, call, code, text the message must contain; for INVALID_ARGUMENT the field)"""
    a, c = w.active.id, w.completed.id
    past = pb.Task(id=a)
    past.schedule.once.run_time.CopyFrom(ts_ms(now_ms() - 60_000))
    nf = grpc.StatusCode.NOT_FOUND
    ia = grpc.StatusCode.INVALID_ARGUMENT
    ab = grpc.StatusCode.ABORTED
    fp = grpc.StatusCode.FAILED_PRECONDITION
    return [
        (
            "get-unknown",
            lambda s: s.GetTask(pb.GetTaskRequest(id=UNKNOWN_TASK), timeout=TIMEOUT),
            nf,
            UNKNOWN_TASK,
        ),
        ("update-unknown", _update(pb.Task(id=UNKNOWN_TASK, name="n"), "name"), nf, UNKNOWN_TASK),
        (
            "delete-unknown",
            lambda s: s.DeleteTask(pb.DeleteTaskRequest(id=UNKNOWN_TASK), timeout=TIMEOUT),
            nf,
            UNKNOWN_TASK,
        ),
        (
            "pause-unknown",
            lambda s: s.PauseTask(pb.PauseTaskRequest(id=UNKNOWN_TASK), timeout=TIMEOUT),
            nf,
            UNKNOWN_TASK,
        ),
        (
            "resume-unknown",
            lambda s: s.ResumeTask(pb.ResumeTaskRequest(id=UNKNOWN_TASK), timeout=TIMEOUT),
            nf,
            UNKNOWN_TASK,
        ),
        (
            "run-unknown",
            lambda s: s.RunTask(pb.RunTaskRequest(id=UNKNOWN_TASK), timeout=TIMEOUT),
            nf,
            UNKNOWN_TASK,
        ),
        (
            "get-execution-unknown",
            lambda s: s.GetExecution(pb.GetExecutionRequest(id=UNKNOWN_EXECUTION), timeout=TIMEOUT),
            nf,
            UNKNOWN_EXECUTION,
        ),
        ("update-mask-state", _update(pb.Task(id=a, name="n"), "state"), ia, "update_mask"),
        ("update-mask-etag", _update(pb.Task(id=a, name="n"), "etag"), ia, "update_mask"),
        ("update-mask-id", _update(pb.Task(id=a, name="n"), "id"), ia, "update_mask"),
        ("update-mask-next-run", _update(pb.Task(id=a, name="n"), "next_run_time"), ia, "update_mask"),
        ("update-mask-create-time", _update(pb.Task(id=a, name="n"), "create_time"), ia, "update_mask"),
        ("update-mask-last-exec", _update(pb.Task(id=a, name="n"), "last_execution"), ia, "update_mask"),
        ("update-mask-unknown", _update(pb.Task(id=a, name="n"), "colour"), ia, "update_mask"),
        ("update-mask-nested", _update(pb.Task(id=a, name="n"), "schedule.cron"), ia, "update_mask"),
        ("update-mask-star-and-name", _update(pb.Task(id=a, name="n"), "*", "name"), ia, "update_mask"),
        ("update-nothing-set", _update(pb.Task(id=a)), ia, "update_mask"),
        ("update-empty-name", _update(pb.Task(id=a), "name"), ia, "task.name"),
        ("update-past-run-time", _update(past, "schedule"), ia, "task.schedule.once.run_time"),
        (
            "update-star-clears-target",
            _update(pb.Task(id=a, name="n", schedule=w.active.schedule), "*"),
            ia,
            "task.target",
        ),
        ("update-bad-etag", _update(pb.Task(id=a, name="n", etag="W/1"), "name"), ia, "task.etag"),
        (
            "delete-bad-etag",
            lambda s: s.DeleteTask(pb.DeleteTaskRequest(id=a, etag="abc"), timeout=TIMEOUT),
            ia,
            "etag",
        ),
        (
            "pause-bad-etag",
            lambda s: s.PauseTask(pb.PauseTaskRequest(id=a, etag="-1"), timeout=TIMEOUT),
            ia,
            "etag",
        ),
        (
            "resume-bad-etag",
            lambda s: s.ResumeTask(pb.ResumeTaskRequest(id=a, etag="1.0"), timeout=TIMEOUT),
            ia,
            "etag",
        ),
        ("update-stale-etag", _update(pb.Task(id=a, name="n", etag="7"), "name"), ab, "etag"),
        (
            "delete-stale-etag",
            lambda s: s.DeleteTask(pb.DeleteTaskRequest(id=a, etag="2"), timeout=TIMEOUT),
            ab,
            "etag",
        ),
        (
            "pause-stale-etag",
            lambda s: s.PauseTask(pb.PauseTaskRequest(id=a, etag="2"), timeout=TIMEOUT),
            ab,
            "etag",
        ),
        (
            "resume-stale-etag",
            lambda s: s.ResumeTask(pb.ResumeTaskRequest(id=a, etag="9"), timeout=TIMEOUT),
            ab,
            "etag",
        ),
        (
            "pause-completed",
            lambda s: s.PauseTask(pb.PauseTaskRequest(id=c), timeout=TIMEOUT),
            fp,
            "completed",
        ),
        (
            "resume-completed",
            lambda s: s.ResumeTask(pb.ResumeTaskRequest(id=c), timeout=TIMEOUT),
            fp,
            "completed",
        ),
        (
            "pause-completed-with-etag",
            lambda s: s.PauseTask(pb.PauseTaskRequest(id=c, etag="1"), timeout=TIMEOUT),
            fp,
            "completed",
        ),
        (
            "request-id-other-task",
            lambda s: s.CreateTask(
                pb.CreateTaskRequest(task=once_task("different"), request_id="req-active"), timeout=TIMEOUT
            ),
            grpc.StatusCode.ALREADY_EXISTS,
            "req-active",
        ),
        (
            "exec-token-other-task",
            lambda s: s.ListExecutions(
                pb.ListExecutionsRequest(task_id=c, page_token=w.exec_token), timeout=TIMEOUT
            ),
            ia,
            "page_token",
        ),
        (
            "exec-token-other-status",
            lambda s: s.ListExecutions(
                pb.ListExecutionsRequest(task_id=a, page_token=w.exec_token, status=1), timeout=TIMEOUT
            ),
            ia,
            "page_token",
        ),
        (
            "exec-token-no-task",
            lambda s: s.ListExecutions(pb.ListExecutionsRequest(page_token=w.exec_token), timeout=TIMEOUT),
            ia,
            "page_token",
        ),
        (
            "exec-token-altered",
            lambda s: s.ListExecutions(
                pb.ListExecutionsRequest(task_id=a, page_token=_flip(w.exec_token)), timeout=TIMEOUT
            ),
            ia,
            "page_token",
        ),
        (
            "tasks-token-from-executions",
            lambda s: s.ListTasks(pb.ListTasksRequest(page_token=w.exec_token), timeout=TIMEOUT),
            ia,
            "page_token",
        ),
    ]


def _flip(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


CASE_NAMES = [
    r[0] for r in _rejections(World(pb.Task(id=UNKNOWN_TASK), pb.Task(id=UNKNOWN_TASK), pb.Execution(), "x"))
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_rejected_call_on_existing_data(stub, rds, world, case):
    _, call, code, text = next(r for r in _rejections(world) if r[0] == case)
    before = snapshot(rds)
    err = rpc_error(lambda: call(stub), code)
    assert text in err.details(), err.details()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert text in violation_fields(err)
    assert snapshot(rds) == before


def test_many_rejections_leave_redis_unchanged(stub, rds, world):
    """The whole battery of rejected calls, back to back, changes no key and no value."""
    before = snapshot(rds)
    assert len(before) >= 8  # two tasks, indexes, two executions, history, ready queue, request id
    for _name, call, code, _ in _rejections(world):
        rpc_error(lambda c=call: c(stub), code)
    for _name, call, _field in CREATE_CASES:
        rpc_error(lambda c=call: c(stub), grpc.StatusCode.INVALID_ARGUMENT)
    assert snapshot(rds) == before
    current = stub.GetTask(pb.GetTaskRequest(id=world.active.id), timeout=TIMEOUT).task
    assert (current.name, current.etag, current.state) == ("active", "1", pb.TaskState.TASK_STATE_ACTIVE)


def test_invalid_request_body_is_invalid_argument(api):
    """A body that is not a valid message gets INVALID_ARGUMENT naming `request`, not INTERNAL."""
    with grpc.insecure_channel(api.target) as channel:
        raw = channel.unary_unary(
            "/scheduler.v1.TaskService/GetTask",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        invalid(lambda: raw(b"\xff\xff\xff", timeout=TIMEOUT), "request")
