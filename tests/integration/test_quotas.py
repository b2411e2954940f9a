"""Per-namespace quotas on tasks and on the bytes their specs take: counted and enforced in the
scripts that create, update and delete tasks, so concurrent creates through several api replicas
never pass a limit; RESOURCE_EXHAUSTED names the quota and its limit; GetStats shows each
namespace's usage. Manual runs a minute (RunTask and RerunExecution together) likewise."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
import redis

from schedcore import pb
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import KEYS, TIMEOUT, create, cron_task, rpc_error, snapshot, stop_service
from tests.support import RedisServer, ServiceThread

LIMIT = 12
SMALL = 3  # team-b's own task quota
TIGHT = 2000  # namespace tight's own task bytes quota
RUNS = 4  # namespace runner's own runs-per-minute quota


@pytest.fixture(scope="module")
def replicas(redis_srv: RedisServer) -> Iterator[list[ServiceThread]]:
    """Two api replicas sharing one Redis, with a task quota of LIMIT (team-b: SMALL), a task
    bytes quota of TIGHT for namespace tight and RUNS runs a minute for namespace runner."""
    settings = api_settings(
        redis_srv.url,
        namespace_max_tasks=LIMIT,
        namespace_max_tasks_overrides=(("team-b", SMALL),),
        namespace_max_task_bytes_overrides=(("tight", TIGHT),),
        namespace_max_runs_per_minute_overrides=(("runner", RUNS),),
    )
    services = [ServiceThread(build_api, settings) for _ in range(2)]
    yield services
    for service in services:
        stop_service(service)


@pytest.fixture()
def stubs(
    replicas: list[ServiceThread], rds: redis.Redis
) -> Iterator[list[pb.task_service_grpc.TaskServiceStub]]:
    channels = [grpc.insecure_channel(r.target) for r in replicas]
    yield [pb.task_service_grpc.TaskServiceStub(c) for c in channels]
    for channel in channels:
        channel.close()


def counted(rds: redis.Redis, namespace: str) -> int:
    return int(rds.hget(KEYS.quota_tasks, namespace) or 0)


def stored_bytes(rds: redis.Redis, namespace: str) -> int:
    return int(rds.hget(KEYS.quota_bytes, namespace) or 0)


def spec_bytes(rds: redis.Redis, namespace: str) -> int:
    """What the specs of the namespace's tasks take in Redis, read from the tasks themselves."""
    total = 0
    for key in rds.scan_iter(KEYS.task("*")):
        spec = rds.hget(key, "spec")
        if spec is not None and pb.Task.FromString(spec).namespace == namespace:
            total += len(spec)
    return total


def fat(name: str, size: int, **fields: object) -> pb.Task:
    task = cron_task(name, **fields)
    task.payload.update({"blob": "x" * size})
    return task


def test_concurrent_creates_through_two_replicas_never_pass_the_quota(stubs, rds: redis.Redis) -> None:
    clients, per_client = 8, 6  # 48 attempts for 12 places
    outcomes: list[grpc.StatusCode] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(i: int) -> None:
        stub = stubs[i % len(stubs)]
        start.wait()
        for j in range(per_client):
            try:
                create(stub, cron_task(f"c{i}-{j}", namespace="team-a"))
                code = grpc.StatusCode.OK
            except grpc.RpcError as err:
                code = err.code()
            with lock:
                outcomes.append(code)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count(grpc.StatusCode.OK) == LIMIT
    assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == clients * per_client - LIMIT
    assert rds.zcard(KEYS.by_name) == LIMIT, "Redis holds exactly the quota's tasks"
    assert counted(rds, "team-a") == LIMIT


def test_over_quota_names_the_quota_and_limit_and_a_delete_frees_a_place(stubs, rds: redis.Redis) -> None:
    stub = stubs[0]
    made = [create(stub, cron_task(f"b{i}", namespace="team-b")) for i in range(SMALL)]
    before = snapshot(rds)
    err = rpc_error(
        lambda: create(stub, cron_task("one more", namespace="team-b")), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    message = err.details() or ""
    assert "task quota" in message and "NAMESPACE_MAX_TASKS" in message, message
    assert f"at most {SMALL}" in message and "'team-b'" in message, message
    assert snapshot(rds) == before, "a refused create writes nothing"
    # Another namespace has its own quota (the default LIMIT).
    create(stub, cron_task("elsewhere", namespace="team-c"))
    stub.DeleteTask(pb.DeleteTaskRequest(id=made[0].id), timeout=TIMEOUT)
    assert counted(rds, "team-b") == SMALL - 1
    create(stubs[1], cron_task("again", namespace="team-b"))
    assert counted(rds, "team-b") == SMALL


def test_a_request_id_repeat_is_not_refused_at_the_limit(stubs, rds: redis.Redis) -> None:
    stub = stubs[0]
    first = create(stub, cron_task("keyed", namespace="team-b"), request_id="r-1")
    for i in range(SMALL - 1):
        create(stub, cron_task(f"fill{i}", namespace="team-b"))
    again = create(stub, cron_task("keyed", namespace="team-b"), request_id="r-1")
    assert again.id == first.id
    assert counted(rds, "team-b") == SMALL


def batch(*tasks: pb.Task) -> pb.BatchCreateTasksRequest:
    return pb.BatchCreateTasksRequest(requests=[pb.CreateTaskRequest(task=t) for t in tasks])


def test_a_batch_that_would_pass_a_quota_creates_nothing(stubs, rds: redis.Redis) -> None:
    stub = stubs[0]
    create(stub, cron_task("held", namespace="team-b"))
    before = snapshot(rds)
    # team-c fits, team-b would hold SMALL + 1: all or none, so none.
    request = batch(
        cron_task("c", namespace="team-c"), *(cron_task(f"b{i}", namespace="team-b") for i in range(SMALL))
    )
    err = rpc_error(
        lambda: stub.BatchCreateTasks(request, timeout=TIMEOUT), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    message = err.details() or ""
    assert "'team-b'" in message and f"at most {SMALL}" in message and f"{SMALL} tasks more" in message
    assert "nothing was created" in message
    assert snapshot(rds) == before
    made = stub.BatchCreateTasks(
        batch(
            cron_task("c", namespace="team-c"),
            *(cron_task(f"b{i}", namespace="team-b") for i in range(SMALL - 1)),
        ),
        timeout=TIMEOUT,
    ).tasks
    assert len(made) == SMALL
    assert (counted(rds, "team-b"), counted(rds, "team-c")) == (SMALL, 1)


def test_get_stats_shows_usage_against_each_limit(stubs, rds: redis.Redis) -> None:
    stub = stubs[0]
    create(stub, cron_task("a1", namespace="team-a"))
    create(stub, cron_task("a2", namespace="team-a"))
    create(stub, cron_task("d"))
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT)
    usage = {u.namespace: (u.tasks, u.max_tasks, u.task_bytes, u.max_task_bytes) for u in stats.namespaces}
    assert {u.namespace: u.max_runs_per_minute for u in stats.namespaces}["runner"] == RUNS
    default_bytes = 256 * 1024 * 1024
    # team-b and tight hold nothing but have quotas of their own, so they are listed.
    assert usage == {
        "default": (1, LIMIT, spec_bytes(rds, "default"), default_bytes),
        "team-a": (2, LIMIT, spec_bytes(rds, "team-a"), default_bytes),
        "team-b": (0, SMALL, 0, default_bytes),
        "tight": (0, LIMIT, 0, TIGHT),
        "runner": (0, LIMIT, 0, default_bytes),
    }
    assert usage["team-a"][2] > 0


def test_task_bytes_quota_bounds_creates_updates_and_batches(stubs, rds: redis.Redis) -> None:
    stub = stubs[0]
    small = create(stub, fat("small", 100, namespace="tight"))
    assert stored_bytes(rds, "tight") == spec_bytes(rds, "tight") > 100
    before = snapshot(rds)
    err = rpc_error(
        lambda: create(stub, fat("big", TIGHT, namespace="tight")), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    message = err.details() or ""
    assert "task bytes quota" in message and "NAMESPACE_MAX_TASK_BYTES" in message, message
    assert f"at most {TIGHT}" in message and "nothing was created" in message, message
    assert snapshot(rds) == before
    # An update that grows the payload past the quota changes nothing.
    grown = fat("small", TIGHT, id=small.id)
    update = pb.UpdateTaskRequest(task=grown)
    update.update_mask.paths.append("payload")
    err = rpc_error(lambda: stub.UpdateTask(update, timeout=TIMEOUT), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "nothing was changed" in (err.details() or "")
    assert snapshot(rds) == before
    # One that shrinks it frees bytes, and the counter follows the stored spec.
    shrunk = pb.UpdateTaskRequest(task=fat("small", 10, id=small.id))
    shrunk.update_mask.paths.append("payload")
    stub.UpdateTask(shrunk, timeout=TIMEOUT)
    assert stored_bytes(rds, "tight") == spec_bytes(rds, "tight")
    # A batch whose tasks together would pass it creates none of them.
    request = batch(*(fat(f"b{i}", TIGHT // 3, namespace="tight") for i in range(3)))
    err = rpc_error(
        lambda: stub.BatchCreateTasks(request, timeout=TIMEOUT), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert "task bytes quota" in (err.details() or "")
    assert stored_bytes(rds, "tight") == spec_bytes(rds, "tight")
    assert rds.zcard(KEYS.by_name) == 1
    # Deleting gives the bytes back.
    stub.DeleteTask(pb.DeleteTaskRequest(id=small.id), timeout=TIMEOUT)
    assert rds.hget(KEYS.quota_bytes, "tight") is None
    create(stub, fat("fits now", TIGHT // 2, namespace="tight"))


def clear_of_a_minute_boundary(rds: redis.Redis, needed_s: float = 10.0) -> None:
    """Wait, if need be, until the store's clock has `needed_s` left in its current minute: the
    runs quota counts per minute of that clock."""
    seconds, micros = rds.time()
    into = (seconds % 60) + micros / 1e6
    if into > 60 - needed_s:
        time.sleep(60 - into + 0.1)


def test_manual_runs_per_minute_are_bounded_across_replicas(stubs, rds: redis.Redis) -> None:
    task = create(stubs[0], cron_task("run me", namespace="runner"))
    clear_of_a_minute_boundary(rds)
    outcomes: list[grpc.StatusCode] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def client(i: int) -> None:
        start.wait()
        for _ in range(2):
            try:
                stubs[i % 2].RunTask(pb.RunTaskRequest(id=task.id), timeout=TIMEOUT)
                code = grpc.StatusCode.OK
            except grpc.RpcError as err:
                code = err.code()
            with lock:
                outcomes.append(code)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count(grpc.StatusCode.OK) == RUNS
    assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 12 - RUNS
    assert rds.zcard(KEYS.task_history(task.id)) == RUNS, "exactly the quota's executions exist"
    before = snapshot(rds)
    err = rpc_error(
        lambda: stubs[0].RunTask(pb.RunTaskRequest(id=task.id), timeout=TIMEOUT),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    message = err.details() or ""
    assert "run quota" in message and "NAMESPACE_MAX_RUNS_PER_MINUTE" in message, message
    assert f"{RUNS} times a minute" in message and "retry in" in message, message
    assert snapshot(rds) == before, "a refused run writes nothing"
    usage = {u.namespace: u for u in stubs[1].GetStats(pb.GetStatsRequest(), timeout=TIMEOUT).namespaces}
    assert (usage["runner"].runs_this_minute, usage["runner"].max_runs_per_minute) == (RUNS, RUNS)
    # Another namespace runs on its own (default) quota.
    other = create(stubs[0], cron_task("other"))
    stubs[0].RunTask(pb.RunTaskRequest(id=other.id), timeout=TIMEOUT)


def test_reruns_count_against_the_same_runs_per_minute_quota(stubs, rds: redis.Redis) -> None:
    task = create(stubs[0], cron_task("rerun me", namespace="runner"))
    clear_of_a_minute_boundary(rds)
    first = stubs[0].RunTask(pb.RunTaskRequest(id=task.id), timeout=TIMEOUT).execution
    for i in range(RUNS - 1):
        stubs[i % 2].RerunExecution(pb.RerunExecutionRequest(id=first.id), timeout=TIMEOUT)
    before = snapshot(rds)
    for call in (
        lambda: stubs[0].RerunExecution(pb.RerunExecutionRequest(id=first.id), timeout=TIMEOUT),
        lambda: stubs[1].RunTask(pb.RunTaskRequest(id=task.id), timeout=TIMEOUT),
    ):
        err = rpc_error(call, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "run quota" in (err.details() or "") and "RerunExecution" in (err.details() or "")
    assert snapshot(rds) == before, "a refused rerun writes nothing"
    assert rds.zcard(KEYS.task_history(task.id)) == RUNS
