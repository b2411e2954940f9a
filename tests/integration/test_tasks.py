"""TaskService task lifecycle over real gRPC and a real Redis: create, get, update, delete, pause,
resume; idempotent create; etag concurrency control."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.struct_pb2 import Struct

from schedcore import pb
from tests.conftest import Backend, backend_api, backend_stub
from tests.integration.helpers import (
    TIMEOUT,
    create,
    cron_task,
    dt_of,
    duration,
    get,
    list_all_tasks,
    ms_of,
    now_ms,
    once_task,
    rpc_error,
    ts_dt,
    ts_ms,
)

# Every test that reaches the backend runs on each of tests/conftest.py's BACKENDS (one Redis or a
# cluster, one partition or four), with the api once per module and backend and the data emptied
# before each test. Keys are read where the task's id puts them (Backend.task_key and friends).
pytestmark = pytest.mark.backends()
api = backend_api
stub = backend_stub

ACTIVE = pb.TaskState.TASK_STATE_ACTIVE
PAUSED = pb.TaskState.TASK_STATE_PAUSED


def update(stub, task: pb.Task, *paths: str) -> pb.Task:
    return stub.UpdateTask(
        pb.UpdateTaskRequest(task=task, update_mask=FieldMask(paths=list(paths))), timeout=TIMEOUT
    ).task


def task_keys(rds, backend: Backend) -> list[bytes]:
    """Every task hash, in every partition."""
    return backend.keys(rds, lambda keys: keys.task("*"))


# --- CreateTask / GetTask ----------------------------------------------------------------------


def test_create_one_time_fills_defaults(stub, rds, backend):
    before = now_ms()
    run_at = before + 3_600_000
    task = pb.Task(name="  report  ", description="d", labels={"team": "ops"})
    task.schedule.once.run_time.CopyFrom(ts_ms(run_at))
    task.target.log.SetInParent()
    task.payload.update({"k": "v", "n": 3})
    created = create(stub, task)
    after = now_ms()

    assert len(created.id) == 16 and all(c in "0123456789abcdef" for c in created.id)
    assert created.name == "report"  # trimmed
    assert created.description == "d"
    assert dict(created.labels) == {"team": "ops"}
    assert created.state == ACTIVE
    assert ms_of(created.next_run_time) == run_at
    assert created.etag == "1"
    assert created.timeout.ToMilliseconds() == 60_000
    rp = created.retry_policy
    assert rp.max_attempts == 1
    assert rp.initial_backoff.ToMilliseconds() == 1_000
    assert rp.max_backoff.ToMilliseconds() == 60_000
    assert rp.backoff_multiplier == 2.0
    assert before - 1000 <= ms_of(created.create_time) <= after + 1000
    assert created.update_time == created.create_time
    assert not created.HasField("last_execution")
    assert dict(created.payload) == {"k": "v", "n": 3}

    # GetTask returns exactly what CreateTask did, and it is in Redis.
    assert get(stub, created.id) == created
    assert rds.hget(backend.task_key(created.id), "rev") == b"1"
    assert backend.zcard(rds, "by_name") == 1
    assert backend.zrange(rds, "by_next") == [f"{run_at:013d}:{created.id}".encode()]


def test_create_http_target_defaults_method_post(stub):
    task = once_task("hook")
    task.target.http.url = " https://example.com/hook?x=1 "
    task.target.http.headers["X-Token"] = "abc"
    created = create(stub, task)
    assert created.target.http.method == pb.HttpMethod.HTTP_METHOD_POST
    assert created.target.http.url == "https://example.com/hook?x=1"
    assert dict(created.target.http.headers) == {"X-Token": "abc"}
    task.target.http.method = pb.HttpMethod.HTTP_METHOD_PUT
    assert create(stub, task).target.http.method == pb.HttpMethod.HTTP_METHOD_PUT


def test_create_ignores_output_only_fields(stub):
    task = once_task("x", id="ffffffffffffffff", state=PAUSED, etag="42")
    task.next_run_time.CopyFrom(ts_ms(1000))
    task.last_execution.execution_id = "nope"
    created = create(stub, task)
    assert created.id != "ffffffffffffffff"
    assert created.state == ACTIVE
    assert created.etag == "1"
    assert ms_of(created.next_run_time) == ms_of(task.schedule.once.run_time)
    assert not created.HasField("last_execution")


def test_create_cron_in_time_zone_next_run_time(stub):
    # Pinned by start_time: 09:00 in Berlin on 2030-03-30 is 08:00 UTC (CET, UTC+1)...
    task = cron_task("berlin", "0 9 * * *", "Europe/Berlin")
    task.schedule.cron.start_time.CopyFrom(ts_dt(datetime(2030, 3, 30, tzinfo=UTC)))
    created = create(stub, task)
    assert created.schedule.cron.time_zone == "Europe/Berlin"
    assert dt_of(created.next_run_time) == datetime(2030, 3, 30, 8, 0, tzinfo=UTC)
    # ...and the day after the spring-forward (2030-03-31) it is 07:00 UTC (CEST, UTC+2).
    task.schedule.cron.start_time.CopyFrom(ts_dt(datetime(2030, 4, 1, tzinfo=UTC)))
    assert dt_of(create(stub, task).next_run_time) == datetime(2030, 4, 1, 7, 0, tzinfo=UTC)


def _next_local(zone: str, hour: int, minute: int) -> datetime:
    tz = ZoneInfo(zone)
    local = datetime.now(tz)
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local:
        candidate = (candidate + timedelta(days=1)).replace(hour=hour, minute=minute)
    return candidate.astimezone(UTC)


def test_create_cron_next_run_is_next_local_occurrence(stub):
    # Asia/Kolkata is UTC+05:30 all year: 12:15 local is 06:45 UTC.
    expected = {_next_local("Asia/Kolkata", 12, 15)}
    created = create(stub, cron_task("kolkata", "15 12 * * *", "Asia/Kolkata"))
    expected.add(_next_local("Asia/Kolkata", 12, 15))  # in case midnight passed during the call
    assert dt_of(created.next_run_time) in expected
    assert dt_of(created.next_run_time).strftime("%H:%M") == "06:45"
    # No time zone means UTC.
    utc = create(stub, cron_task("utc", "15 12 * * *"))
    assert utc.schedule.cron.time_zone == "UTC"
    assert dt_of(utc.next_run_time).strftime("%H:%M") == "12:15"
    assert dt_of(utc.next_run_time) > datetime.now(UTC)


def test_get_unknown_task_not_found(stub):
    err = rpc_error(lambda: get(stub, "0123456789abcdef"), grpc.StatusCode.NOT_FOUND)
    assert "0123456789abcdef" in err.details()


# --- UpdateTask --------------------------------------------------------------------------------


def test_update_with_mask_changes_only_named_fields(stub):
    created = create(stub, once_task("a", description="old", labels={"x": "1"}))
    change = pb.Task(id=created.id, name="ignored", description="new", labels={"y": "2"})
    updated = update(stub, change, "description")
    assert updated.description == "new"
    assert updated.name == "a"
    assert dict(updated.labels) == {"x": "1"}
    assert updated.etag == "2"
    assert updated.create_time == created.create_time
    assert ms_of(updated.update_time) >= ms_of(created.update_time)
    assert get(stub, created.id) == updated

    # labels in the mask replace the whole map.
    updated = update(stub, change, "labels")
    assert dict(updated.labels) == {"y": "2"}
    assert updated.etag == "3"


def test_export_metrics_is_stored_and_changed_by_its_mask_path(stub):
    created = create(stub, once_task("m", export_metrics=True))
    assert created.export_metrics and get(stub, created.id).export_metrics
    assert not update(stub, pb.Task(id=created.id), "export_metrics").export_metrics  # unset: off
    assert update(stub, pb.Task(id=created.id, export_metrics=True)).export_metrics  # empty mask: set


def test_update_empty_mask_changes_set_fields(stub):
    created = create(stub, once_task("a", description="keep", labels={"x": "1"}))
    change = pb.Task(id=created.id, name="b", timeout=duration(5))
    updated = update(stub, change)
    assert updated.name == "b"
    assert updated.timeout.ToMilliseconds() == 5_000
    assert updated.description == "keep"
    assert dict(updated.labels) == {"x": "1"}
    assert updated.schedule == created.schedule
    assert updated.next_run_time == created.next_run_time
    assert updated.etag == "2"


def test_update_star_resets_unset_fields(stub):
    created = create(
        stub,
        once_task(
            "a",
            description="desc",
            labels={"x": "1"},
            timeout=duration(5),
            retry_policy=pb.RetryPolicy(max_attempts=3),
        ),
    )
    change = cron_task("b", "*/5 * * * *")
    change.id = created.id
    updated = update(stub, change, "*")
    assert updated.name == "b"
    assert updated.description == ""
    assert dict(updated.labels) == {}
    assert not updated.HasField("payload")
    assert updated.timeout.ToMilliseconds() == 60_000
    assert updated.retry_policy.max_attempts == 1
    assert updated.schedule.cron.expression == "*/5 * * * *"
    assert updated.schedule.cron.time_zone == "UTC"
    assert get(stub, created.id) == updated


def test_update_rename_changes_name_order(stub, rds, backend):
    b = create(stub, once_task("b"))
    c = create(stub, once_task("c"))
    assert [t.name for t in list_all_tasks(stub)] == ["b", "c"]
    update(stub, pb.Task(id=c.id, name="a"), "name")
    assert [(t.name, t.id) for t in list_all_tasks(stub)] == [("a", c.id), ("b", b.id)]
    assert [t.name for t in list_all_tasks(stub, order_by=pb.TaskOrder.TASK_ORDER_NAME)] == ["a", "b"]
    # The old index entry went away.
    assert backend.zcard(rds, "by_name") == 2


def test_update_schedule_recomputes_next_run_time(stub, rds, backend):
    created = create(stub, once_task("a", in_s=3600))
    new_at = now_ms() + 7_200_000
    change = pb.Task(id=created.id)
    change.schedule.once.run_time.CopyFrom(ts_ms(new_at))
    updated = update(stub, change, "schedule")
    assert ms_of(updated.next_run_time) == new_at
    assert updated.state == ACTIVE
    assert get(stub, created.id).next_run_time == updated.next_run_time
    assert backend.zrange(rds, "by_next") == [f"{new_at:013d}:{created.id}".encode()]

    # To a cron schedule: the next occurrence after now.
    change = pb.Task(id=created.id)
    change.schedule.cron.expression = "0 0 1 1 *"
    change.schedule.cron.time_zone = "America/New_York"
    updated = update(stub, change, "schedule")
    nxt = dt_of(updated.next_run_time).astimezone(ZoneInfo("America/New_York"))
    assert (nxt.month, nxt.day, nxt.hour, nxt.minute) == (1, 1, 0, 0)
    assert nxt.year == datetime.now(ZoneInfo("America/New_York")).year + 1
    assert updated.etag == "3"


def test_update_schedule_of_paused_task_stays_paused(stub):
    created = create(stub, once_task("a"))
    stub.PauseTask(pb.PauseTaskRequest(id=created.id), timeout=TIMEOUT)
    change = cron_task("a", "*/5 * * * *")
    change.id = created.id
    updated = update(stub, change, "schedule")
    assert updated.state == PAUSED
    assert not updated.HasField("next_run_time")
    resumed = stub.ResumeTask(pb.ResumeTaskRequest(id=created.id), timeout=TIMEOUT).task
    assert resumed.state == ACTIVE
    assert dt_of(resumed.next_run_time).minute % 5 == 0


def test_update_with_current_etag_succeeds(stub):
    created = create(stub, once_task("a"))
    updated = update(stub, pb.Task(id=created.id, name="b", etag=created.etag), "name")
    assert updated.etag == "2"
    again = update(stub, pb.Task(id=created.id, name="c", etag=updated.etag), "name")
    assert again.etag == "3" and again.name == "c"


# --- DeleteTask --------------------------------------------------------------------------------


def test_delete_task(stub, rds, backend):
    keep = create(stub, once_task("keep"))
    gone = create(stub, once_task("gone"))
    execution = stub.RunTask(pb.RunTaskRequest(id=gone.id), timeout=TIMEOUT).execution
    stub.DeleteTask(pb.DeleteTaskRequest(id=gone.id, etag=gone.etag), timeout=TIMEOUT)
    rpc_error(lambda: get(stub, gone.id), grpc.StatusCode.NOT_FOUND)
    assert [t.id for t in list_all_tasks(stub)] == [keep.id]
    assert [t.id for t in list_all_tasks(stub, order_by=pb.TaskOrder.TASK_ORDER_NEXT_RUN_TIME)] == [keep.id]
    assert not any(rds.exists(keys.task(gone.id)) for keys in backend.parts.all)
    assert backend.zcard(rds, "by_name") == 1 and backend.zcard(rds, "by_next") == 1
    # Its history is kept.
    got = stub.GetExecution(pb.GetExecutionRequest(id=execution.id), timeout=TIMEOUT).execution
    assert got.task_id == gone.id
    # Deleting again: NOT_FOUND; without etag works.
    rpc_error(
        lambda: stub.DeleteTask(pb.DeleteTaskRequest(id=gone.id), timeout=TIMEOUT), grpc.StatusCode.NOT_FOUND
    )
    stub.DeleteTask(pb.DeleteTaskRequest(id=keep.id), timeout=TIMEOUT)
    assert list_all_tasks(stub) == []


# --- PauseTask / ResumeTask --------------------------------------------------------------------


def test_pause_clears_next_run_and_is_idempotent(stub, rds, backend):
    created = create(stub, cron_task("a", "*/5 * * * *"))
    assert created.HasField("next_run_time")
    paused = stub.PauseTask(pb.PauseTaskRequest(id=created.id, etag=created.etag), timeout=TIMEOUT).task
    assert paused.state == PAUSED
    assert not paused.HasField("next_run_time")
    assert paused.etag == "2"
    assert get(stub, created.id) == paused
    assert backend.zrange(rds, "by_next") == [f"~:{created.id}".encode()]
    assert not rds.hexists(backend.task_key(created.id), "next")

    again = stub.PauseTask(pb.PauseTaskRequest(id=created.id), timeout=TIMEOUT).task
    assert again == paused  # no-op: same etag, same update_time
    again = stub.PauseTask(pb.PauseTaskRequest(id=created.id, etag="2"), timeout=TIMEOUT).task
    assert again.etag == "2"


def test_resume_from_next_occurrence_after_now(stub):
    created = create(stub, cron_task("every-second", "* * * * * *"))
    first_next = ms_of(created.next_run_time)
    paused = stub.PauseTask(pb.PauseTaskRequest(id=created.id), timeout=TIMEOUT).task
    time.sleep(1.2)
    before = now_ms()
    assert first_next < before
    resumed = stub.ResumeTask(pb.ResumeTaskRequest(id=created.id, etag=paused.etag), timeout=TIMEOUT).task
    after = now_ms()
    assert resumed.state == ACTIVE
    assert resumed.etag == "3"
    nxt = ms_of(resumed.next_run_time)
    assert before < nxt <= after + 1000
    assert nxt % 1000 == 0
    # Resuming an active task is a no-op.
    assert stub.ResumeTask(pb.ResumeTaskRequest(id=created.id), timeout=TIMEOUT).task == resumed


def test_resume_after_end_time_completes(stub):
    task = cron_task("ending", "* * * * * *")
    task.schedule.cron.end_time.CopyFrom(ts_ms(now_ms() + 1100))  # at least one occurrence left
    created = create(stub, task)
    assert created.state == ACTIVE and created.HasField("next_run_time")
    stub.PauseTask(pb.PauseTaskRequest(id=created.id), timeout=TIMEOUT)
    time.sleep(1.2)
    resumed = stub.ResumeTask(pb.ResumeTaskRequest(id=created.id), timeout=TIMEOUT).task
    assert resumed.state == pb.TaskState.TASK_STATE_COMPLETED
    assert not resumed.HasField("next_run_time")
    err = rpc_error(
        lambda: stub.PauseTask(pb.PauseTaskRequest(id=created.id), timeout=TIMEOUT),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "completed" in err.details()


def test_resume_one_time_task_whose_time_passed_runs_at_once(stub):
    created = create(stub, once_task("soon", in_s=0.3))
    stub.PauseTask(pb.PauseTaskRequest(id=created.id), timeout=TIMEOUT)
    time.sleep(0.4)
    resumed = stub.ResumeTask(pb.ResumeTaskRequest(id=created.id), timeout=TIMEOUT).task
    assert resumed.state == ACTIVE
    assert resumed.next_run_time == created.schedule.once.run_time
    assert ms_of(resumed.next_run_time) < now_ms()


# --- idempotent CreateTask ---------------------------------------------------------------------


def test_create_with_request_id_is_idempotent(stub, rds, backend):
    task = once_task("idem")
    first = create(stub, task, request_id="req-1")
    retry = create(stub, task, request_id="req-1")
    assert retry.id == first.id
    assert retry == first
    assert len(task_keys(rds, backend)) == 1
    assert backend.zcard(rds, "by_name") == 1
    # A retry after the task changed returns the task as it is now.
    stub.PauseTask(pb.PauseTaskRequest(id=first.id), timeout=TIMEOUT)
    again = create(stub, task, request_id="req-1")
    assert again.id == first.id and again.state == PAUSED and again.etag == "2"
    assert len(task_keys(rds, backend)) == 1
    # Another request id creates another task.
    assert create(stub, task, request_id="req-2").id != first.id
    assert len(task_keys(rds, backend)) == 2
    # Without a request id every call creates.
    create(stub, task)
    create(stub, task)
    assert len(task_keys(rds, backend)) == 4


def test_concurrent_creates_with_same_request_id_make_one_task(stub, rds, backend):
    task = cron_task("concurrent", "0 3 * * *", "Europe/Berlin")
    barrier = threading.Barrier(10)

    def call(_: int) -> str:
        barrier.wait()
        return create(stub, task, request_id="same-request").id

    with ThreadPoolExecutor(10) as pool:
        got = list(pool.map(call, range(10)))
    assert len(set(got)) == 1
    assert [k.decode() for k in task_keys(rds, backend)] == [backend.task_key(got[0])]
    assert backend.zcard(rds, "by_name") == 1 and backend.zcard(rds, "by_next") == 1
    assert [t.id for t in list_all_tasks(stub)] == [got[0]]


def test_request_id_of_deleted_task_is_already_exists(stub):
    task = once_task("x")
    created = create(stub, task, request_id="r-del")
    stub.DeleteTask(pb.DeleteTaskRequest(id=created.id), timeout=TIMEOUT)
    err = rpc_error(lambda: create(stub, task, request_id="r-del"), grpc.StatusCode.ALREADY_EXISTS)
    assert "r-del" in err.details()


# --- etag conflicts ----------------------------------------------------------------------------


def test_two_clients_same_etag_exactly_one_wins(stub, api):
    created = create(stub, once_task("contested"))
    with grpc.insecure_channel(api.target) as other_channel:
        other = pb.task_service_grpc.TaskServiceStub(other_channel)
        read_a = get(stub, created.id)
        read_b = get(other, created.id)
        assert read_a.etag == read_b.etag == "1"
        barrier = threading.Barrier(2)
        results: dict[str, object] = {}

        def write(label: str, client, etag: str) -> None:
            barrier.wait()
            try:
                results[label] = update(client, pb.Task(id=created.id, name=label, etag=etag), "name")
            except grpc.RpcError as err:
                results[label] = err.code()

        threads = [
            threading.Thread(target=write, args=("A", stub, read_a.etag)),
            threading.Thread(target=write, args=("B", other, read_b.etag)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
    winners = [k for k, v in results.items() if isinstance(v, pb.Task)]
    losers = [k for k, v in results.items() if v == grpc.StatusCode.ABORTED]
    assert len(winners) == 1 and len(losers) == 1, results
    current = get(stub, created.id)
    assert current.name == winners[0]
    assert current.etag == "2"
    # The loser re-reads... or updates without an etag: that succeeds.
    last = update(stub, pb.Task(id=created.id, name="final"), "name")
    assert last.name == "final" and last.etag == "3"


def test_many_writers_with_one_etag_one_success(stub):
    created = create(stub, once_task("race"))
    barrier = threading.Barrier(8)

    def write(i: int) -> str:
        barrier.wait()
        try:
            update(stub, pb.Task(id=created.id, description=f"w{i}", etag="1"), "description")
            return "ok"
        except grpc.RpcError as err:
            return err.code().name

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(write, range(8)))
    assert sorted(outcomes) == ["ABORTED"] * 7 + ["ok"]
    assert get(stub, created.id).etag == "2"


def test_concurrent_writers_without_etag_all_apply(stub):
    created = create(stub, once_task("counter"))
    barrier = threading.Barrier(4)

    def write(i: int) -> pb.Task:
        barrier.wait()
        return update(stub, pb.Task(id=created.id, description=f"w{i}"), "description")

    # Four read-modify-writes without etag: a lost compare-and-set is retried (at most three
    # losses, one per other writer), so none fails and no change is lost.
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(write, range(4)))
    assert sorted(r.etag for r in results) == ["2", "3", "4", "5"]
    final = get(stub, created.id)
    assert final.etag == "5"
    assert final.description == next(r.description for r in results if r.etag == "5")


@pytest.mark.parametrize("rpc", ["pause", "resume", "delete", "update"])
def test_stale_etag_is_aborted_and_changes_nothing(stub, rpc):
    created = create(stub, once_task("stale"))
    # Move the etag on without UpdateTask: pause ("2"), resume ("3"), and for resume pause ("4").
    stub.PauseTask(pb.PauseTaskRequest(id=created.id), timeout=TIMEOUT)
    stub.ResumeTask(pb.ResumeTaskRequest(id=created.id), timeout=TIMEOUT)
    if rpc == "resume":
        stub.PauseTask(pb.PauseTaskRequest(id=created.id), timeout=TIMEOUT)
    current = get(stub, created.id)
    calls = {
        "pause": lambda: stub.PauseTask(pb.PauseTaskRequest(id=created.id, etag="1"), timeout=TIMEOUT),
        "resume": lambda: stub.ResumeTask(pb.ResumeTaskRequest(id=created.id, etag="1"), timeout=TIMEOUT),
        "delete": lambda: stub.DeleteTask(pb.DeleteTaskRequest(id=created.id, etag="1"), timeout=TIMEOUT),
        "update": lambda: update(stub, pb.Task(id=created.id, name="zz", etag="1"), "name"),
    }
    err = rpc_error(calls[rpc], grpc.StatusCode.ABORTED)
    assert "etag" in err.details()
    assert get(stub, created.id) == current


def test_payload_roundtrip(stub):
    payload = Struct()
    payload.update({"nested": {"list": [1, "two", None, True]}, "s": "é"})
    created = create(stub, once_task("p", payload=payload))
    assert get(stub, created.id).payload == payload
