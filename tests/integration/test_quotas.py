"""Per-namespace task quotas: counted and enforced in the scripts that create and delete tasks, so
concurrent creates through several api replicas never pass the limit; RESOURCE_EXHAUSTED names
the quota and its limit; GetStats shows each namespace's usage."""

from __future__ import annotations

import threading
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
SMALL = 3  # team-b's own quota


@pytest.fixture(scope="module")
def replicas(redis_srv: RedisServer) -> Iterator[list[ServiceThread]]:
    """Two api replicas sharing one Redis, with a task quota of LIMIT (team-b: SMALL)."""
    settings = api_settings(
        redis_srv.url, namespace_max_tasks=LIMIT, namespace_max_tasks_overrides=(("team-b", SMALL),)
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
    usage = {u.namespace: (u.tasks, u.max_tasks) for u in stats.namespaces}
    # team-b holds nothing but has a quota of its own, so it is listed.
    assert usage == {"default": (1, LIMIT), "team-a": (2, LIMIT), "team-b": (0, SMALL)}
