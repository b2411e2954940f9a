"""RerunExecution (docs/scheduling.md, "Rerun"): a new PENDING execution (trigger RERUN,
`rerun_of`) of the original's occurrence, with its nominal time and payload, queued like a
RunTask run; the original untouched; any status accepted; bad ids INVALID_ARGUMENT naming "id";
unknown executions and deleted tasks NOT_FOUND; audited; scoped to the token's namespace and
refused to viewers; and a running suite runs it with the task's current target."""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc
import pytest
import redis
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import pb
from tests.conftest import Backend, backend_api, backend_stub
from tests.integration.auth_support import EDITOR, VIEWER, AuthApi
from tests.integration.engine_support import TERMINAL, Suite, http, once_in, suite
from tests.integration.helpers import (
    TIMEOUT,
    create,
    cron_task,
    invalid,
    list_all_executions,
    ms_of,
    now_ms,
    once_task,
    rpc_error,
    snapshot,
    ts_ms,
)
from tests.support import RedisServer, free_port, wait_for

api = backend_api
stub = backend_stub
S = pb.ExecutionStatus
RERUN = pb.ExecutionTrigger.EXECUTION_TRIGGER_RERUN
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def rerun(stub, execution_id: str) -> pb.Execution:  # type: ignore[no-untyped-def]
    return stub.RerunExecution(pb.RerunExecutionRequest(id=execution_id), timeout=TIMEOUT).execution


def set_status(rds, backend: Backend, execution_id: str, status: int, message: str = "") -> None:  # type: ignore[no-untyped-def]
    """What the scheduler writes when an execution moves on: the record and its status field."""
    key = backend.execution_key(execution_id)
    record = pb.Execution.FromString(rds.hget(key, "pb"))
    record.status = status  # type: ignore[assignment]
    record.status_message = message
    rds.hset(key, mapping={"pb": record.SerializeToString(), "status": int(status)})


def assert_rerun_of(made: pb.Execution, original: pb.Execution, before_ms: int, after_ms: int) -> None:
    nominal = ms_of(original.nominal_time)
    assert re.fullmatch(rf"{original.task_id}-{nominal:013d}-m[0-9a-f]{{4}}", made.id), made.id
    assert made.id != original.id
    assert made.rerun_of == original.id
    assert made.trigger == RERUN
    assert made.status == S.EXECUTION_STATUS_PENDING
    assert made.attempt == 1
    assert (made.task_id, made.namespace) == (original.task_id, original.namespace)
    assert made.nominal_time == original.nominal_time
    assert made.payload == original.payload
    assert before_ms - 1000 <= ms_of(made.fire_time) <= after_ms + 1000
    # Lag is measured from when the rerun was asked for, not from the (old) occurrence.
    assert made.planned_time == made.fire_time
    for field in ("start_time", "finish_time", "result", "lag", "duration", "cancel_time"):
        assert not made.HasField(field), field
    assert not made.status_message and not made.executor


@pytest.mark.backends()
def test_a_failed_execution_is_rerun_as_a_new_pending_record_and_the_original_stays(
    stub, rds, backend: Backend
) -> None:
    task = once_task("flaky")
    task.payload.update({"v": 1})
    created = create(stub, task)
    original = stub.RunTask(pb.RunTaskRequest(id=created.id), timeout=TIMEOUT).execution
    set_status(rds, backend, original.id, S.EXECUTION_STATUS_FAILED, "connection refused")
    # The task's payload changes after the run: the rerun carries the original's.
    changed = pb.Task(id=created.id)
    changed.payload.update({"v": 2})
    stub.UpdateTask(
        pb.UpdateTaskRequest(task=changed, update_mask=FieldMask(paths=["payload"])), timeout=TIMEOUT
    )
    kept = rds.hgetall(backend.execution_key(original.id))

    before = now_ms()
    made = rerun(stub, original.id)
    after = now_ms()

    assert_rerun_of(made, original, before, after)
    assert dict(made.payload) == {"v": 1.0}
    assert stub.GetExecution(pb.GetExecutionRequest(id=made.id), timeout=TIMEOUT).execution == made
    # The original, byte for byte.
    assert rds.hgetall(backend.execution_key(original.id)) == kept
    got = stub.GetExecution(pb.GetExecutionRequest(id=original.id), timeout=TIMEOUT).execution
    assert (got.status, got.status_message) == (S.EXECUTION_STATUS_FAILED, "connection refused")
    # Queued for an executor like a RunTask run, and active for the overlap rule.
    keys = backend.parts.execution(made.id)
    assert rds.zscore(keys.ready, made.id) is not None
    assert rds.sismember(keys.task_active(created.id), made.id)
    # Listed beside the original, at its nominal time (two manual-run suffixes in either order).
    listed = [e.id for e in list_all_executions(stub, task_id=created.id)]
    assert sorted(listed) == sorted([made.id, original.id])
    nominal = ms_of(original.nominal_time)
    window = list_all_executions(stub, start_time=ts_ms(nominal), end_time=ts_ms(nominal + 1))
    assert sorted(e.id for e in window) == sorted(listed)
    # A rerun of the rerun names the rerun; the occurrence stays the same.
    again = rerun(stub, made.id)
    assert_rerun_of(again, made, before, now_ms())
    assert again.nominal_time == original.nominal_time


@pytest.mark.backends()
def test_an_occurrence_id_and_every_status_may_be_rerun(stub, rds, backend: Backend) -> None:
    start = (now_ms() // 60_000 - 10) * 60_000
    task = pb.Task(
        name="bf", schedule=pb.Schedule(interval=pb.IntervalSchedule()), target=pb.Target(log=pb.LogTarget())
    )
    task.schedule.interval.every.FromMilliseconds(60_000)
    task.schedule.interval.start_time.CopyFrom(ts_ms(start))
    created = create(stub, task)
    request = pb.BackfillTaskRequest(id=created.id, start_time=ts_ms(start), end_time=ts_ms(start + 420_000))
    assert stub.BackfillTask(request, timeout=TIMEOUT).created == 7
    occurrences = sorted(list_all_executions(stub, task_id=created.id), key=lambda e: e.id)
    assert [e.id for e in occurrences] == [f"{created.id}-{start + i * 60_000:013d}" for i in range(7)]
    statuses = [s for s in S.values() if s]  # PENDING ... SKIPPED, RUNNING included
    for original, status in zip(occurrences, statuses, strict=True):
        set_status(rds, backend, original.id, status)
        kept = rds.hgetall(backend.execution_key(original.id))
        before = now_ms()
        made = rerun(stub, original.id)
        assert_rerun_of(made, original, before, now_ms())
        assert rds.hgetall(backend.execution_key(original.id)) == kept, S.Name(status)
    assert len(list_all_executions(stub, task_id=created.id)) == 7 + len(statuses)


@pytest.mark.backends("single-P1", "single-P4")
def test_bad_ids_unknown_executions_and_deleted_tasks_are_refused(stub, rds, backend: Backend) -> None:
    created = create(stub, once_task("gone"))
    run = stub.RunTask(pb.RunTaskRequest(id=created.id), timeout=TIMEOUT).execution
    before = snapshot(rds)
    for bad in (
        "",
        "nope",
        created.id,
        f"{created.id}-123",
        f"{run.id}x",
        f"{created.id[:-1]}G-0000000001000",
    ):
        err = invalid(lambda bad=bad: rerun(stub, bad), "id")
        assert "execution id" in (err.details() or "") or "required" in (err.details() or "")
    unknown = rpc_error(lambda: rerun(stub, f"{created.id}-0000000001000-mabcd"), NOT_FOUND)
    assert "execution" in (unknown.details() or "")
    rpc_error(lambda: rerun(stub, "0123456789abcdef-0000000001000"), NOT_FOUND)
    assert snapshot(rds) == before, "a refused rerun writes nothing"

    stub.DeleteTask(pb.DeleteTaskRequest(id=created.id), timeout=TIMEOUT)
    assert stub.GetExecution(pb.GetExecutionRequest(id=run.id), timeout=TIMEOUT).execution.id == run.id
    before = snapshot(rds)
    err = rpc_error(lambda: rerun(stub, run.id), NOT_FOUND)
    assert created.id in (err.details() or "") and "deleted" in (err.details() or ""), err.details()
    assert snapshot(rds) == before


# --- with tokens -------------------------------------------------------------------------------


def test_a_rerun_is_audited_with_its_actor_and_request_id(auth_api: AuthApi) -> None:
    admin = auth_api.admin
    token, secret = admin.new_token("ops", EDITOR, "team-a")
    ops = admin.as_token(secret)
    task = create(ops.tasks, cron_task("t"))  # type: ignore[arg-type]
    original = ops.tasks.RunTask(pb.RunTaskRequest(id=task.id)).execution
    made = ops.with_request_id("req-rerun").tasks.RerunExecution(pb.RerunExecutionRequest(id=original.id))
    [event] = admin.audit.ListAuditEvents(pb.ListAuditEventsRequest(task_id=task.id, page_size=1)).events
    assert (
        event.action,
        event.actor,
        event.actor_token_id,
        event.request_id,
        event.namespace,
        event.task_id,
        event.execution_id,
    ) == (
        pb.AuditAction.AUDIT_ACTION_RERUN_EXECUTION,
        "ops",
        token.id,
        "req-rerun",
        "team-a",
        task.id,
        made.execution.id,
    )
    assert made.execution.rerun_of == original.id


def test_another_namespace_and_a_viewer_are_refused_and_nothing_changes(
    auth_api: AuthApi, rds: redis.Redis
) -> None:
    admin = auth_api.admin
    a = admin.as_token(admin.new_token("team a", EDITOR, "team-a")[1])
    b = admin.as_token(admin.new_token("team b", EDITOR, "team-b")[1])
    viewer = admin.as_token(admin.new_token("a viewer", VIEWER, "team-a")[1])
    task_b = create(b.tasks, cron_task("b"))  # type: ignore[arg-type]
    task_a = create(a.tasks, cron_task("a"))  # type: ignore[arg-type]
    run_b = b.tasks.RunTask(pb.RunTaskRequest(id=task_b.id)).execution
    run_a = a.tasks.RunTask(pb.RunTaskRequest(id=task_a.id)).execution
    before = snapshot(rds)
    # As GetExecution: another namespace's execution is refused, without naming its namespace.
    err = rpc_error(lambda: a.tasks.RerunExecution(pb.RerunExecutionRequest(id=run_b.id)), DENIED)
    assert "team-b" not in (err.details() or "") and "team-a" in (err.details() or ""), err.details()
    assert rpc_error(lambda: a.tasks.GetExecution(pb.GetExecutionRequest(id=run_b.id)), DENIED)
    # Viewers may not run tasks, nor rerun executions (access.RULES: editor, as RunTask).
    err = rpc_error(lambda: viewer.tasks.RerunExecution(pb.RerunExecutionRequest(id=run_a.id)), DENIED)
    assert "viewer" in (err.details() or "")
    assert snapshot(rds) == before
    # The owners (and a cluster-wide token) may.
    assert b.tasks.RerunExecution(pb.RerunExecutionRequest(id=run_b.id)).execution.rerun_of == run_b.id
    assert admin.tasks.RerunExecution(pb.RerunExecutionRequest(id=run_a.id)).execution.namespace == "team-a"


# --- a running suite ---------------------------------------------------------------------------


@pytest.fixture()
def one(redis_srv: RedisServer, rds) -> Iterator[Suite]:  # type: ignore[no-untyped-def]
    with suite(redis_srv) as s:
        yield s


def test_a_failed_run_rerun_after_its_target_is_fixed_succeeds(one: Suite) -> None:
    refused = f"http://127.0.0.1:{free_port()}/"  # nothing listens: the attempt fails
    spec = pb.Task(name="fix me", schedule=once_in(0.5), target=http(refused))
    spec.payload.update({"n": 7})
    task = one.stub.CreateTask(pb.CreateTaskRequest(task=spec)).task
    [failed] = one.wait_terminal(task.id, 1)
    assert failed.status == S.EXECUTION_STATUS_FAILED, failed
    # The rerun takes the task's target as it is now.
    fixed = pb.Task(id=task.id, target=pb.Target(log=pb.LogTarget()))
    one.stub.UpdateTask(pb.UpdateTaskRequest(task=fixed, update_mask=FieldMask(paths=["target"])))
    made = rerun(one.stub, failed.id)
    assert made.status == S.EXECUTION_STATUS_PENDING

    def current() -> pb.Execution:
        return one.stub.GetExecution(pb.GetExecutionRequest(id=made.id)).execution

    wait_for(lambda: current().status in TERMINAL, 15)
    ran = current()
    assert ran.status == S.EXECUTION_STATUS_SUCCEEDED, ran
    assert ran.rerun_of == failed.id and ran.nominal_time == failed.nominal_time
    assert '"n"' in ran.result.output  # the log target records the payload, the original's
    assert ms_of(ran.start_time) - ms_of(ran.planned_time) == ran.lag.ToMilliseconds()
    still = one.stub.GetExecution(pb.GetExecutionRequest(id=failed.id)).execution
    assert still == failed
