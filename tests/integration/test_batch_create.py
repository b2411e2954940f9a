"""BatchCreateTasks: many tasks in one call, all or none, idempotent per request id."""

from __future__ import annotations

import grpc
import pytest

from schedcore import pb
from tests.conftest import backend_api, backend_stub
from tests.integration import helpers
from tests.integration.helpers import cron_task, get, invalid, list_all_tasks, once_task, rpc_error, snapshot

# Every test runs on each of tests/conftest.py's BACKENDS (one Redis or a cluster, one partition or
# four): a batch is one script in one partition wherever it lands. `snapshot` reads every key (on
# a cluster, `rds` asks every primary).
pytestmark = pytest.mark.backends()
api = backend_api
stub = backend_stub


def batch(*tasks: pb.Task, ids: list[str] | None = None) -> pb.BatchCreateTasksRequest:
    ids = ids or [""] * len(tasks)
    return pb.BatchCreateTasksRequest(
        requests=[pb.CreateTaskRequest(task=t, request_id=r) for t, r in zip(tasks, ids, strict=True)]
    )


def test_creates_every_task_in_order(stub) -> None:
    tasks = [cron_task(f"c{i}") if i % 2 else once_task(f"o{i}") for i in range(300)]
    reply = stub.BatchCreateTasks(batch(*tasks))
    assert [t.name for t in reply.tasks] == [t.name for t in tasks]
    assert len({t.id for t in reply.tasks}) == 300
    for created in reply.tasks[:5]:
        assert get(stub, created.id) == created
        assert created.state == pb.TaskState.TASK_STATE_ACTIVE and created.HasField("next_run_time")
    assert len(list_all_tasks(stub)) == 300
    stats = stub.GetStats(pb.GetStatsRequest())
    assert {c.state: c.count for c in stats.tasks}[pb.TaskState.TASK_STATE_ACTIVE] == 300


def test_one_invalid_request_creates_nothing_and_every_problem_is_named(stub, rds) -> None:
    before = snapshot(rds)
    tasks = [cron_task("fine"), cron_task(""), cron_task("fine too"), cron_task("x", expression="61 * * * *")]
    err = invalid(lambda: stub.BatchCreateTasks(batch(*tasks)), "requests[1].task.name")
    fields = helpers.violation_fields(err)
    assert "requests[3].task.schedule.cron.expression" in fields, fields
    assert snapshot(rds) == before


def test_request_ids_make_it_idempotent(stub, rds, backend) -> None:
    # A batch looks every item's request id up in the partition of its first one (docs/partitions.md,
    # "BatchCreateTasks"): the known ids below share one partition with four partitions as with one,
    # so each batch finds them on every backend.
    assert len({backend.parts.of_request(r) for r in ("r-a", "r-c", "r-d")}) == 1
    first = stub.BatchCreateTasks(batch(cron_task("a"), cron_task("b"), ids=["r-a", "r-c"])).tasks
    # A retry of the same batch returns the same tasks and creates nothing.
    again = stub.BatchCreateTasks(batch(cron_task("a"), cron_task("b"), ids=["r-a", "r-c"])).tasks
    assert [t.id for t in again] == [t.id for t in first]
    # A batch mixing a known request with new ones creates only the new ones.
    mixed = stub.BatchCreateTasks(batch(cron_task("b"), cron_task("c"), ids=["r-c", "r-b"])).tasks
    assert mixed[0].id == first[1].id
    assert sorted(t.name for t in list_all_tasks(stub)) == ["a", "b", "c"]
    # Reusing a request id for different contents refuses the whole batch.
    before = snapshot(rds)
    err = rpc_error(
        lambda: stub.BatchCreateTasks(batch(cron_task("d"), cron_task("not a"), ids=["r-d", "r-a"])),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert "requests[1]" in (err.details() or "")
    assert snapshot(rds) == before


def test_bad_batches(stub) -> None:
    invalid(lambda: stub.BatchCreateTasks(pb.BatchCreateTasksRequest()), "requests")
    invalid(lambda: stub.BatchCreateTasks(batch(*[cron_task("t")] * 1001)), "requests")
    invalid(
        lambda: stub.BatchCreateTasks(batch(cron_task("a"), cron_task("b"), ids=["same", "same"])),
        "requests[1].request_id",
    )
    assert list_all_tasks(stub) == []


def test_a_repeated_request_whose_task_was_deleted(stub) -> None:
    [first] = stub.BatchCreateTasks(batch(cron_task("a"), ids=["r-a"])).tasks
    stub.DeleteTask(pb.DeleteTaskRequest(id=first.id))
    err = rpc_error(
        lambda: stub.BatchCreateTasks(batch(cron_task("a"), cron_task("b"), ids=["r-a", "r-b"])),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert "deleted" in (err.details() or "")
