"""RunTask, ListExecutions, GetExecution, and execution-history retention (by count and by age)."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from schedcore import pb, redisconn
from schedcore.store import Store
from services.api.app import build as build_api
from services.api.retention import sweep_once
from tests.conftest import Backend, backend_api, backend_stub
from tests.integration.helpers import (
    TIMEOUT,
    create,
    cron_task,
    get,
    invalid,
    list_all_executions,
    ms_of,
    now_ms,
    once_task,
    rpc_error,
    stop_service,
    ts_ms,
)
from tests.support import ServiceThread

# Every test that reaches the backend runs on each of tests/conftest.py's BACKENDS (one Redis or a
# cluster, one partition or four), with the api once per module and backend and the data emptied
# before each test. Records are read where the execution's id puts them (Backend.execution_key).
pytestmark = pytest.mark.backends()
api = backend_api
stub = backend_stub

PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
FAILED = pb.ExecutionStatus.EXECUTION_STATUS_FAILED
RUNNING = pb.ExecutionStatus.EXECUTION_STATUS_RUNNING


def run(stub, task_id: str) -> pb.Execution:
    execution = stub.RunTask(pb.RunTaskRequest(id=task_id), timeout=TIMEOUT).execution
    time.sleep(0.003)  # distinct nominal milliseconds, so "newest first" is well defined
    return execution


def set_status(rds, backend: Backend, execution_id: str, status: int) -> None:
    """What an executor does when an execution moves on: the record and its status field."""
    key = backend.execution_key(execution_id)
    record = pb.Execution.FromString(rds.hget(key, "pb"))
    record.status = status  # type: ignore[assignment]
    rds.hset(key, mapping={"pb": record.SerializeToString(), "status": int(status)})


def exec_ids(stub, **filters: object) -> list[str]:
    return [e.id for e in list_all_executions(stub, **filters)]


def exists(stub, execution_id: str) -> bool:
    try:
        stub.GetExecution(pb.GetExecutionRequest(id=execution_id), timeout=TIMEOUT)
        return True
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
        return False


# --- RunTask / GetExecution --------------------------------------------------------------------


def test_run_task_creates_pending_manual_execution(stub, rds, backend):
    task = once_task("runme")
    task.payload.update({"hello": "world"})
    created = create(stub, task)
    before = now_ms()
    execution = stub.RunTask(pb.RunTaskRequest(id=created.id), timeout=TIMEOUT).execution
    after = now_ms()

    match = re.fullmatch(rf"{created.id}-(\d{{13}})-m[0-9a-f]{{4}}", execution.id)
    assert match, execution.id
    assert execution.task_id == created.id
    assert execution.status == PENDING
    assert execution.trigger == pb.ExecutionTrigger.EXECUTION_TRIGGER_MANUAL
    assert execution.attempt == 1
    assert int(match.group(1)) == ms_of(execution.nominal_time)
    assert before - 1000 <= ms_of(execution.nominal_time) <= after + 1000
    assert execution.fire_time == execution.nominal_time
    assert execution.payload == created.payload
    assert not execution.HasField("finish_time")

    got = stub.GetExecution(pb.GetExecutionRequest(id=execution.id), timeout=TIMEOUT).execution
    assert got == execution
    assert exec_ids(stub, task_id=created.id) == [execution.id]
    assert exec_ids(stub) == [execution.id]

    task_now = get(stub, created.id)
    assert task_now.last_execution.execution_id == execution.id
    assert task_now.last_execution.status == PENDING
    assert task_now.last_execution.nominal_time == execution.nominal_time
    # A run is not a change of the task: the etag and schedule stay.
    assert task_now.etag == created.etag
    assert task_now.next_run_time == created.next_run_time
    # It is queued for an executor.
    assert rds.zscore(backend.parts.execution(execution.id).ready, execution.id) is not None


def test_run_task_whatever_the_state(stub, rds, backend):
    paused = create(stub, cron_task("paused"))
    stub.PauseTask(pb.PauseTaskRequest(id=paused.id), timeout=TIMEOUT)
    completed = create(stub, once_task("completed"))
    rds.hset(backend.task_key(completed.id), "state", int(pb.TaskState.TASK_STATE_COMPLETED))
    for task_id in (paused.id, completed.id):
        execution = stub.RunTask(pb.RunTaskRequest(id=task_id), timeout=TIMEOUT).execution
        assert execution.status == PENDING
        assert get(stub, task_id).last_execution.execution_id == execution.id
    assert get(stub, paused.id).state == pb.TaskState.TASK_STATE_PAUSED


def test_run_twice_in_a_row_gives_distinct_ids(stub):
    created = create(stub, once_task("twice"))
    with ThreadPoolExecutor(8) as pool:
        got = list(
            pool.map(
                lambda _: stub.RunTask(pb.RunTaskRequest(id=created.id), timeout=TIMEOUT).execution.id,
                range(20),
            )
        )
    assert len(set(got)) == 20
    assert sorted(exec_ids(stub, task_id=created.id)) == sorted(got)


# --- ListExecutions ----------------------------------------------------------------------------


@pytest.fixture()
def history(stub):
    """Two tasks with interleaved runs: a1 b1 a2 a3 b2 a4 (oldest first)."""
    a = create(stub, once_task("a"))
    b = create(stub, once_task("b"))
    order = [a, b, a, a, b, a]
    runs = [run(stub, t.id) for t in order]
    return a, b, runs


def test_list_executions_newest_first_per_task_and_all(stub, history):
    a, b, runs = history
    newest_first = [e.id for e in reversed(runs)]
    assert exec_ids(stub) == newest_first
    assert exec_ids(stub, task_id=a.id) == [e.id for e in reversed(runs) if e.task_id == a.id]
    assert exec_ids(stub, task_id=b.id) == [e.id for e in reversed(runs) if e.task_id == b.id]
    assert exec_ids(stub, task_id="fedcba9876543210") == []
    listed = list_all_executions(stub)
    assert listed == list(reversed(runs))  # the full records


def test_list_executions_status_filter(stub, rds, backend, history):
    a, _, runs = history
    set_status(rds, backend, runs[0].id, SUCCEEDED)
    set_status(rds, backend, runs[3].id, SUCCEEDED)
    set_status(rds, backend, runs[4].id, FAILED)
    assert exec_ids(stub, status=SUCCEEDED) == [runs[3].id, runs[0].id]
    assert exec_ids(stub, status=FAILED) == [runs[4].id]
    assert exec_ids(stub, status=PENDING) == [runs[5].id, runs[2].id, runs[1].id]
    assert exec_ids(stub, status=RUNNING) == []
    assert exec_ids(stub, status=SUCCEEDED, task_id=a.id) == [runs[3].id, runs[0].id]
    assert [e.status for e in list_all_executions(stub, status=SUCCEEDED)] == [SUCCEEDED, SUCCEEDED]
    # Paged one by one, the filter still holds.
    assert exec_ids(stub, status=PENDING, page_size=1) == [runs[5].id, runs[2].id, runs[1].id]
    invalid(lambda: stub.ListExecutions(pb.ListExecutionsRequest(status=42), timeout=TIMEOUT), "status")


def test_list_executions_time_range(stub, history):
    a, _, runs = history
    t = [e.nominal_time for e in runs]
    # [start, end): start inclusive, end exclusive.
    assert exec_ids(stub, start_time=t[1], end_time=t[4]) == [runs[3].id, runs[2].id, runs[1].id]
    assert exec_ids(stub, start_time=t[4]) == [runs[5].id, runs[4].id]
    assert exec_ids(stub, end_time=t[1]) == [runs[0].id]
    assert exec_ids(stub, task_id=a.id, start_time=t[2], end_time=t[5]) == [runs[3].id, runs[2].id]
    assert exec_ids(stub, task_id=a.id, end_time=t[0]) == []
    assert exec_ids(stub, start_time=ts_ms(ms_of(t[5]) + 1)) == []
    # Both bounds and paging.
    assert exec_ids(stub, start_time=t[0], end_time=t[5], page_size=2) == [e.id for e in reversed(runs[:5])]


def test_list_executions_paging(stub):
    a = create(stub, once_task("a"))
    b = create(stub, once_task("b"))
    runs = [run(stub, (a if i % 3 else b).id) for i in range(10)]
    expected_all = [e.id for e in reversed(runs)]
    for page_size in (1, 3, 4, 10):
        pages = []
        token = ""
        while True:
            resp = stub.ListExecutions(
                pb.ListExecutionsRequest(page_size=page_size, page_token=token), timeout=TIMEOUT
            )
            assert len(resp.executions) <= page_size
            pages.append([e.id for e in resp.executions])
            token = resp.next_page_token
            if not token:
                break
        assert [i for p in pages for i in p] == expected_all
    expected_a = [e.id for e in reversed(runs) if e.task_id == a.id]
    assert exec_ids(stub, task_id=a.id, page_size=2) == expected_a
    # Executions created after the first page was read do not disturb the rest of the walk.
    first = stub.ListExecutions(pb.ListExecutionsRequest(page_size=4), timeout=TIMEOUT)
    newer = run(stub, a.id)
    rest = exec_ids_from(stub, first.next_page_token, page_size=4)
    assert [e.id for e in first.executions] + rest == expected_all
    assert newer.id not in rest
    # The default page size is 50.
    more = [run(stub, b.id) for _ in range(45)]
    assert len(more) + len(runs) + 1 > 50
    assert len(stub.ListExecutions(pb.ListExecutionsRequest(), timeout=TIMEOUT).executions) == 50


def exec_ids_from(stub, token: str, **filters: object) -> list[str]:
    out: list[str] = []
    while token:
        resp = stub.ListExecutions(pb.ListExecutionsRequest(page_token=token, **filters), timeout=TIMEOUT)  # type: ignore[arg-type]
        out += [e.id for e in resp.executions]
        token = resp.next_page_token
    return out


def test_executions_outlive_their_task(stub, history):
    a, _, runs = history
    stub.DeleteTask(pb.DeleteTaskRequest(id=a.id), timeout=TIMEOUT)
    assert exec_ids(stub, task_id=a.id) == [e.id for e in reversed(runs) if e.task_id == a.id]
    assert len(exec_ids(stub)) == len(runs)
    rpc_error(lambda: stub.RunTask(pb.RunTaskRequest(id=a.id), timeout=TIMEOUT), grpc.StatusCode.NOT_FOUND)


# --- retention by count ------------------------------------------------------------------------


@pytest.fixture()
def small_history_stub(backend, rds):
    service = ServiceThread(build_api, backend.settings(history_max_per_task=3))
    try:
        with grpc.insecure_channel(service.target) as channel:
            yield pb.task_service_grpc.TaskServiceStub(channel)
    finally:
        stop_service(service)


def test_retention_by_count_keeps_newest_terminal_only(small_history_stub, rds, backend):
    stub = small_history_stub
    task = create(stub, once_task("kept-3"))
    runs = [run(stub, task.id) for _ in range(4)]
    # Four executions, all pending: the oldest is beyond the limit but not terminal, so it stays.
    assert exec_ids(stub, task_id=task.id) == [e.id for e in reversed(runs)]
    set_status(rds, backend, runs[0].id, SUCCEEDED)
    set_status(rds, backend, runs[1].id, FAILED)
    runs.append(run(stub, task.id))
    kept = [e.id for e in reversed(runs[2:])]
    assert exec_ids(stub, task_id=task.id) == kept
    assert exec_ids(stub) == kept
    assert not exists(stub, runs[0].id) and not exists(stub, runs[1].id)
    assert not rds.exists(backend.execution_key(runs[0].id))
    assert rds.zcard(backend.task_keys(task.id).task_history(task.id)) == 3
    assert backend.zcard(rds, "history") == 3


def test_retention_by_count_never_deletes_non_terminal(small_history_stub, rds, backend):
    stub = small_history_stub
    task = create(stub, once_task("pending-stays"))
    other = create(stub, once_task("other"))
    other_runs = [run(stub, other.id) for _ in range(2)]
    runs = [run(stub, task.id) for _ in range(4)]
    set_status(rds, backend, runs[1].id, SUCCEEDED)  # runs[0] stays PENDING
    set_status(rds, backend, runs[2].id, SUCCEEDED)  # within the newest three: kept
    runs.append(run(stub, task.id))
    assert exec_ids(stub, task_id=task.id) == [runs[4].id, runs[3].id, runs[2].id, runs[0].id]
    assert exists(stub, runs[0].id)
    assert not exists(stub, runs[1].id)
    # Other tasks' history is untouched.
    assert exec_ids(stub, task_id=other.id) == [e.id for e in reversed(other_runs)]
    # Once the old one is terminal, the next run trims it.
    set_status(rds, backend, runs[0].id, SUCCEEDED)
    runs.append(run(stub, task.id))
    assert exec_ids(stub, task_id=task.id) == [runs[5].id, runs[4].id, runs[3].id]


# --- retention by age --------------------------------------------------------------------------


def sweep(backend: Backend, max_age_s: int) -> int:
    async def main() -> int:
        client = redisconn.connect(backend.settings())
        try:
            return await sweep_once(Store(client, "ts", backend.partitions), max_age_s)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_retention_by_age_deletes_old_terminal_executions(stub, rds, backend):
    a = create(stub, once_task("a"))
    b = create(stub, once_task("b"))
    old = [run(stub, a.id), run(stub, b.id), run(stub, a.id), run(stub, a.id)]
    time.sleep(1.1)
    new = [run(stub, a.id), run(stub, b.id)]
    set_status(rds, backend, old[0].id, SUCCEEDED)
    set_status(rds, backend, old[1].id, FAILED)
    set_status(rds, backend, old[2].id, RUNNING)  # old, but not terminal: kept
    # old[3] stays PENDING: kept
    set_status(rds, backend, new[0].id, SUCCEEDED)  # terminal, but young: kept

    assert sweep(backend, 1) == 2
    assert not exists(stub, old[0].id) and not exists(stub, old[1].id)
    kept = [new[1], new[0], old[3], old[2]]
    assert exec_ids(stub) == [e.id for e in kept]
    assert exec_ids(stub, task_id=a.id) == [new[0].id, old[3].id, old[2].id]
    assert exec_ids(stub, task_id=b.id) == [new[1].id]
    assert backend.zcard(rds, "history") == 4
    # Sweeping again deletes nothing more.
    assert sweep(backend, 1) == 0
    # With a long max age nothing is old enough.
    set_status(rds, backend, old[2].id, SUCCEEDED)
    assert sweep(backend, 3600) == 0
    assert exists(stub, old[2].id)


def test_retention_by_age_is_not_blocked_by_old_pending_executions(stub, rds, backend):
    """500 old executions that never finished (say, their executor died) must not stop the sweep
    from deleting the old terminal executions behind them."""
    stuck = create(stub, once_task("stuck"))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: stub.RunTask(pb.RunTaskRequest(id=stuck.id), timeout=TIMEOUT), range(500)))
    time.sleep(0.01)
    done = create(stub, once_task("done"))
    finished = [run(stub, done.id) for _ in range(3)]
    for e in finished:
        set_status(rds, backend, e.id, SUCCEEDED)
    time.sleep(0.01)

    deleted = sweep(backend, 0)  # everything before now is "old"
    assert [exists(stub, e.id) for e in finished] == [False, False, False], f"sweep deleted {deleted}"
    assert deleted == 3
    assert len(exec_ids(stub, task_id=stuck.id)) == 500
