"""The task API over several partitions (docs/partitions.md): each task lives in the partition its
id names, listings merge every partition under one cursor, counts and quotas add the partitions
up, a request id finds its task again, and a service refuses data laid out in another count."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
import redis

from schedcore import pb
from schedcore.redisconn import from_url
from schedcore.settings import SettingsError
from schedcore.store import Store
from schedcore.store.keys import Keys, Partitions
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import (
    TIMEOUT,
    create,
    cron_task,
    list_all_executions,
    list_all_tasks,
    rpc_error,
)
from tests.integration.test_api_process import ROOT, process_env
from tests.support import RedisServer, ServiceThread

P = 3
PARTS = Partitions("ts", P)
MAX_TASKS = 7


@pytest.fixture()
def stub(redis_srv: RedisServer, rds: redis.Redis) -> Iterator[pb.task_service_grpc.TaskServiceStub]:
    settings = api_settings(
        redis_srv.url,
        partitions=P,
        namespace_max_tasks_overrides=(("small", MAX_TASKS),),
        namespace_max_runs_per_minute_overrides=(("runner", 4),),
    )
    service = ServiceThread(build_api, settings)
    with grpc.insecure_channel(service.target) as channel:
        yield pb.task_service_grpc.TaskServiceStub(channel)
    service.stop()


def partition_of(rds: redis.Redis, task_id: str) -> int:
    """The partition whose keys hold the task (read from Redis, not from the id)."""
    held = [p for p, keys in enumerate(PARTS.all) if rds.exists(keys.task(task_id))]
    assert len(held) == 1, (task_id, held)
    return held[0]


def test_tasks_spread_over_every_partition_and_live_where_their_id_says(stub, rds: redis.Redis) -> None:
    tasks = [create(stub, cron_task(f"t{i:02d}")) for i in range(30)]
    places = {t.id: partition_of(rds, t.id) for t in tasks}
    assert all(places[t.id] == int(t.id, 16) % P for t in tasks)
    assert set(places.values()) == set(range(P))  # 30 random draws over 3 partitions
    for t in tasks:  # every call by id reaches it
        assert stub.GetTask(pb.GetTaskRequest(id=t.id), timeout=TIMEOUT).task.name == t.name
    victim = tasks[0]
    stub.DeleteTask(pb.DeleteTaskRequest(id=victim.id), timeout=TIMEOUT)
    assert not any(rds.exists(keys.task(victim.id)) for keys in PARTS.all)
    # Each partition's name index holds exactly its own tasks.
    for p, keys in enumerate(PARTS.all):
        members = {m.decode().rsplit("\x00", 1)[1] for m in rds.zrange(keys.by_name, 0, -1)}
        assert members == {t.id for t in tasks[1:] if places[t.id] == p}


@pytest.mark.parametrize("order", [pb.TaskOrder.TASK_ORDER_NAME, pb.TaskOrder.TASK_ORDER_NEXT_RUN_TIME])
def test_listing_merges_partitions_in_order_without_duplicate_or_gap(stub, order) -> None:
    made = [create(stub, cron_task(f"n{i:02d}", expression=f"{i % 60} * * * *")) for i in range(40)]
    pages, token, seen = 0, "", []
    while True:
        resp = stub.ListTasks(
            pb.ListTasksRequest(page_size=7, page_token=token, order_by=order), timeout=TIMEOUT
        )
        seen += list(resp.tasks)
        pages += 1
        if pages == 2:  # created mid-listing, in some partition: a later page may show it, never twice
            create(stub, cron_task("zz-late"))
        token = resp.next_page_token
        if not token:
            break
    ids = [t.id for t in seen]
    assert len(ids) == len(set(ids))
    assert {t.id for t in made} <= set(ids)
    if order == pb.TaskOrder.TASK_ORDER_NAME:
        assert [t.name for t in seen] == sorted(t.name for t in seen)
    else:
        keys = [(t.next_run_time.ToMilliseconds(), t.id) for t in seen]
        assert keys == sorted(keys)


def test_a_request_id_returns_the_same_task_from_the_partition_it_names(stub, rds: redis.Redis) -> None:
    for i in range(6):
        request_id = f"req-{i}"
        first = create(stub, cron_task(f"r{i}"), request_id=request_id)
        again = create(stub, cron_task(f"r{i}"), request_id=request_id)
        assert again.id == first.id
        assert partition_of(rds, first.id) == PARTS.of_request(request_id)
    assert len(list_all_tasks(stub)) == 6


def test_a_batch_lands_in_one_partition_and_a_retry_creates_nothing_more(stub, rds: redis.Redis) -> None:
    batch = pb.BatchCreateTasksRequest(
        requests=[pb.CreateTaskRequest(task=cron_task(f"b{i}"), request_id=f"b-{i}") for i in range(12)]
    )
    first = stub.BatchCreateTasks(batch, timeout=TIMEOUT).tasks
    assert {partition_of(rds, t.id) for t in first} == {PARTS.of_request("b-0")}
    again = stub.BatchCreateTasks(batch, timeout=TIMEOUT).tasks
    assert [t.id for t in again] == [t.id for t in first]
    assert len(list_all_tasks(stub)) == 12


def test_task_quota_counts_every_partition(stub, rds: redis.Redis) -> None:
    made = [create(stub, cron_task(f"q{i}", namespace="small")) for i in range(MAX_TASKS)]
    assert len({partition_of(rds, t.id) for t in made}) > 1  # the count is spread, the limit is not
    for _ in range(4):  # wherever the next one would go, the namespace is full
        err = rpc_error(
            lambda: create(stub, cron_task("over", namespace="small")), grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert f"holds {MAX_TASKS} tasks and may hold at most {MAX_TASKS}" in err.details()
    stub.DeleteTask(pb.DeleteTaskRequest(id=made[0].id), timeout=TIMEOUT)
    create(stub, cron_task("fits-again", namespace="small"))
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT)
    small = next(n for n in stats.namespaces if n.namespace == "small")
    assert (small.tasks, small.max_tasks) == (MAX_TASKS, MAX_TASKS)
    counts = {c.state: c.count for c in stats.tasks}
    assert counts[pb.TaskState.TASK_STATE_ACTIVE] == MAX_TASKS


def test_run_quota_and_global_history_span_partitions(stub, rds: redis.Redis) -> None:
    tasks: dict[int, pb.Task] = {}
    i = 0
    while len(tasks) < P:  # one task in each partition
        task = create(stub, cron_task(f"h{i}", namespace="runner"))
        tasks.setdefault(partition_of(rds, task.id), task)
        i += 1
    runs = [stub.RunTask(pb.RunTaskRequest(id=t.id), timeout=TIMEOUT).execution for t in tasks.values()]
    runs.append(stub.RunTask(pb.RunTaskRequest(id=tasks[0].id), timeout=TIMEOUT).execution)
    err = rpc_error(
        lambda: stub.RunTask(pb.RunTaskRequest(id=tasks[1].id), timeout=TIMEOUT),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert "ran tasks 4 times this minute" in err.details()
    listed = list_all_executions(stub, page_size=1)
    assert sorted(e.id for e in listed) == sorted(e.id for e in runs)
    order = [(e.nominal_time.ToMilliseconds(), e.id) for e in listed]
    assert order == sorted(order, reverse=True)  # newest first across partitions
    for e in runs:  # each record is in its task's partition
        assert rds.exists(PARTS.execution(e.id).execution(e.id))


def test_a_store_refuses_data_laid_out_in_another_count(redis_srv: RedisServer, rds: redis.Redis) -> None:
    async def check(count: int) -> None:
        client = from_url(redis_srv.url)
        try:
            await Store(client, "ts", count).ready()
        finally:
            await client.aclose()

    asyncio.run(check(P))
    assert rds.get(Keys().partition_count) == str(P).encode()
    asyncio.run(check(P))  # the same count again: fine
    with pytest.raises(
        SettingsError, match=f"PARTITIONS: this Redis holds data laid out in {P} partitions, not 2"
    ):
        asyncio.run(check(2))


@pytest.mark.parametrize("module", ["services.api", "services.scheduler"])
def test_a_service_with_another_count_exits_with_status_2_naming_both(
    redis_srv: RedisServer, rds: redis.Redis, module: str
) -> None:
    rds.set(Keys().partition_count, P)
    env = process_env(REDIS_URL=redis_srv.url, GRPC_HOST="127.0.0.1", GRPC_PORT="0", PARTITIONS="2")
    done = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert (
        f"configuration error: PARTITIONS: this Redis holds data laid out in {P} partitions, not 2"
        in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_data_from_before_the_count_was_recorded_counts_as_one_partition(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    async def ready(count: int) -> bool:
        client = from_url(redis_srv.url)
        try:
            return await Store(client, "ts", count).ready()
        finally:
            await client.aclose()

    rds.zadd(Keys().by_name, {"legacy\x000000000000000003": 0})  # a task stored before PARTITIONS
    with pytest.raises(SettingsError, match="holds data laid out in 1 partitions, not 4"):
        asyncio.run(ready(4))
    assert rds.get(Keys().partition_count) == b"1"
    assert asyncio.run(ready(1))
