"""CreateTask and UpdateTask with validate_only: the call's answer, and Redis left as it was."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import pb
from tests.integration import helpers
from tests.integration.helpers import (
    TIMEOUT,
    create,
    cron_task,
    get,
    invalid,
    list_all_tasks,
    rpc_error,
    snapshot,
    violation_fields,
)

api = helpers.api
stub = helpers.stub


def test_a_valid_create_answers_the_task_and_writes_nothing(stub, rds) -> None:
    before = snapshot(rds)
    request = pb.CreateTaskRequest(task=cron_task("checked"), request_id="r-1", validate_only=True)
    task = stub.CreateTask(request, timeout=TIMEOUT).task
    assert task.name == "checked" and task.HasField("next_run_time")
    assert (task.id, task.etag) == ("", "")
    assert snapshot(rds) == before, "a validate-only create wrote to Redis (an audit event?)"
    # The request id was not used up: the real call with it creates the task.
    made = stub.CreateTask(pb.CreateTaskRequest(task=cron_task("checked"), request_id="r-1"), timeout=TIMEOUT)
    assert [t.id for t in list_all_tasks(stub)] == [made.task.id]


def test_an_invalid_create_reports_every_violation_as_the_real_call(stub, rds) -> None:
    task = cron_task("")
    task.target.http.url = "not a url"
    before = snapshot(rds)
    dry = invalid(
        lambda: stub.CreateTask(pb.CreateTaskRequest(task=task, validate_only=True), timeout=TIMEOUT),
        "task.target.http.url",
    )
    real = invalid(lambda: stub.CreateTask(pb.CreateTaskRequest(task=task), timeout=TIMEOUT), "task.name")
    assert violation_fields(dry) == violation_fields(real)
    assert snapshot(rds) == before


def test_a_validate_only_update_changes_nothing_and_checks_the_etag(stub, rds) -> None:
    task = create(stub, cron_task("nightly", expression="0 3 * * *"))
    before = snapshot(rds)
    change = pb.Task(id=task.id, etag=task.etag, name="renamed")
    mask = FieldMask(paths=["name"])
    reply = stub.UpdateTask(
        pb.UpdateTaskRequest(task=change, update_mask=mask, validate_only=True), timeout=TIMEOUT
    ).task
    assert (reply.name, reply.etag, reply.schedule.cron.expression) == ("renamed", task.etag, "0 3 * * *")
    assert snapshot(rds) == before
    assert get(stub, task.id).name == "nightly"
    invalid(
        lambda: stub.UpdateTask(
            pb.UpdateTaskRequest(task=pb.Task(id=task.id, name=""), update_mask=mask, validate_only=True),
            timeout=TIMEOUT,
        ),
        "task.name",
    )
    stub.UpdateTask(pb.UpdateTaskRequest(task=pb.Task(id=task.id, description="theirs")), timeout=TIMEOUT)
    rpc_error(
        lambda: stub.UpdateTask(
            pb.UpdateTaskRequest(task=change, update_mask=mask, validate_only=True), timeout=TIMEOUT
        ),
        grpc.StatusCode.ABORTED,
    )


def test_a_batch_refuses_validate_only(stub, rds) -> None:
    before = snapshot(rds)
    request = pb.BatchCreateTasksRequest(
        requests=[
            pb.CreateTaskRequest(task=cron_task("a")),
            pb.CreateTaskRequest(task=cron_task("b"), validate_only=True),
        ]
    )
    invalid(lambda: stub.BatchCreateTasks(request, timeout=TIMEOUT), "requests[1].validate_only")
    assert snapshot(rds) == before
