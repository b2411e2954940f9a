"""The task API over several partitions (docs/partitions.md), PARTITIONS=4, on one Redis and on a
Redis Cluster (3 primaries with a replica each, "Cluster mode"): each task lives in the partition
its id names (on a cluster, on the primary serving that partition's slot only, so the partitions
spread over every primary), listings merge every partition under one cursor, counts and quotas add
the partitions up, a request id finds its task again, the audit trail lists every partition's
events, and a service refuses data laid out in another count."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import redis
from google.protobuf.field_mask_pb2 import FieldMask
from redis.crc import key_slot

from schedcore import pb
from schedcore.redisconn import connect
from schedcore.settings import SettingsError
from schedcore.store import Store
from schedcore.store.keys import Keys, Partitions
from services.api.app import build as build_api
from tests.conftest import Backend
from tests.integration.helpers import (
    TIMEOUT,
    create,
    cron_task,
    get,
    list_all_executions,
    list_all_tasks,
    rpc_error,
)
from tests.integration.test_api_process import ROOT, process_env
from tests.support import RedisCluster, RedisServer, ServiceThread

# Every test that reaches the backend runs on one Redis and on the session's cluster, both with P
# partitions (tests/conftest.py); the cluster's own checks (which node holds a key) run where
# backend.cluster says there is one.
pytestmark = pytest.mark.backends("single-P4", "cluster-P4")

P = 4
PARTS = Partitions("ts", P)
MAX_TASKS = 9
MAX_RUNS = P + 1  # one run in each partition and one more fill the namespace's minute


@pytest.fixture()
def api(backend: Backend, rds: Any) -> Iterator[ServiceThread]:
    assert backend.partitions == P
    settings = backend.settings(
        namespace_max_tasks_overrides=(("small", MAX_TASKS),),
        namespace_max_runs_per_minute_overrides=(("runner", MAX_RUNS),),
    )
    service = ServiceThread(build_api, settings)
    yield service
    service.stop()


@pytest.fixture()
def channel(api: ServiceThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(api.target) as channel:
        yield channel


@pytest.fixture()
def stub(channel: grpc.Channel) -> pb.task_service_grpc.TaskServiceStub:
    return pb.task_service_grpc.TaskServiceStub(channel)


def partition_of(rds: Any, task_id: str) -> int:
    """The partition whose keys hold the task (read from Redis, not from the id)."""
    held = [p for p, keys in enumerate(PARTS.all) if rds.exists(keys.task(task_id))]
    assert len(held) == 1, (task_id, held)
    return held[0]


def names_index(client: Any, keys: Keys) -> set[str]:
    """The task ids in one partition's name index."""
    return {m.decode().rsplit("\x00", 1)[1] for m in client.zrange(keys.by_name, 0, -1)}


def one_per_partition(stub, rds: Any, **fields: object) -> dict[int, pb.Task]:
    tasks: dict[int, pb.Task] = {}
    i = 0
    while len(tasks) < P:
        task = create(stub, cron_task(f"p{i:03d}", **fields))
        tasks.setdefault(partition_of(rds, task.id), task)
        i += 1
    return tasks


# --- on a cluster: which node holds a key ------------------------------------------------------


def slot(keys: Keys) -> int:
    return key_slot(keys.by_name.encode())


def owner(cluster: RedisCluster, partition: int) -> RedisServer:
    return cluster.owner(slot(PARTS.all[partition]))


def exists_on(node: RedisServer, key: str) -> bool:
    """Whether `node` itself holds `key` (asked directly: a node never answers for another's slot)."""
    with contextlib.closing(node.client()) as client:
        try:
            return bool(client.exists(key))
        except redis.exceptions.MovedError:  # the slot is another node's
            return False


def on_cluster(backend: Backend) -> RedisCluster | None:
    return backend.server if isinstance(backend.server, RedisCluster) else None


def test_partitions_spread_over_every_primary(cluster: RedisCluster) -> None:
    owners = {p: owner(cluster, p).port for p in range(P)}
    assert set(owners.values()) == {m.port for m in cluster.masters}, owners


# --- the api over partitions, on both backends -------------------------------------------------


def test_tasks_live_in_the_partition_their_id_names(stub, rds: Any, backend: Backend) -> None:
    cluster = on_cluster(backend)
    made = [create(stub, cron_task(f"t{i:02d}")) for i in range(40)]
    places = {t.id: partition_of(rds, t.id) for t in made}
    assert all(places[t.id] == int(t.id, 16) % P == PARTS.of_task(t.id) for t in made)
    assert set(places.values()) == set(range(P))  # 40 random draws over 4 partitions
    for t in made:  # every call by id reaches it
        if cluster is not None:  # on its slot's primary, and on no other
            node = owner(cluster, places[t.id])
            key = PARTS.task(t.id).task(t.id)
            assert exists_on(node, key)
            assert all(not exists_on(other, key) for other in cluster.masters if other is not node)
        assert stub.GetTask(pb.GetTaskRequest(id=t.id), timeout=TIMEOUT).task.name == t.name
        changed = pb.Task(id=t.id, description=f"changed {t.id}")
        stub.UpdateTask(
            pb.UpdateTaskRequest(task=changed, update_mask=FieldMask(paths=["description"])), timeout=TIMEOUT
        )
        assert get(stub, t.id).description == f"changed {t.id}"

    def indexes_hold_exactly(tasks: list[pb.Task]) -> None:
        """Each partition's name index holds exactly its own tasks; on a cluster, read on the
        primary of its slot, where that slot has keys."""
        for p, keys in enumerate(PARTS.all):
            own = {t.id for t in tasks if places[t.id] == p}
            assert names_index(rds, keys) == own
            if cluster is not None:
                with contextlib.closing(owner(cluster, p).client()) as node:
                    assert int(node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot(keys))) > 0
                    assert names_index(node, keys) == own

    indexes_hold_exactly(made)
    gone, kept = made[:8], made[8:]
    for t in gone:
        stub.DeleteTask(pb.DeleteTaskRequest(id=t.id), timeout=TIMEOUT)
        rpc_error(lambda t=t: get(stub, t.id), grpc.StatusCode.NOT_FOUND)
        assert not any(rds.exists(keys.task(t.id)) for keys in PARTS.all)
        if cluster is not None:
            assert not exists_on(owner(cluster, places[t.id]), PARTS.task(t.id).task(t.id))
    assert {t.id for t in list_all_tasks(stub)} == {t.id for t in kept}
    indexes_hold_exactly(kept)


@pytest.mark.parametrize("order", [pb.TaskOrder.TASK_ORDER_NAME, pb.TaskOrder.TASK_ORDER_NEXT_RUN_TIME])
def test_listing_merges_partitions_in_order_without_duplicate_or_gap(stub, order) -> None:
    made = [create(stub, cron_task(f"n{i:02d}", expression=f"{i % 60} * * * *")) for i in range(40)]
    pages, token, seen = 0, "", []
    late: pb.Task | None = None
    while True:
        resp = stub.ListTasks(
            pb.ListTasksRequest(page_size=4, page_token=token, order_by=order), timeout=TIMEOUT
        )
        assert len(resp.tasks) <= 4
        seen += list(resp.tasks)
        pages += 1
        if pages == 2:  # created mid-listing, in some partition: a later page may show it, never twice
            late = create(stub, cron_task("zz-late"))
        token = resp.next_page_token
        if not token:
            break
    assert late is not None
    ids = [t.id for t in seen]
    assert len(ids) == len(set(ids))
    assert set(ids) - {late.id} == {t.id for t in made}  # every task made before, nothing else
    if order == pb.TaskOrder.TASK_ORDER_NAME:
        assert [t.name for t in seen] == sorted(t.name for t in seen)
        assert [t.name for t in seen if t.id != late.id] == sorted(t.name for t in made)
    else:
        keys = [(t.next_run_time.ToMilliseconds(), t.id) for t in seen]
        assert keys == sorted(keys)


def test_a_request_id_returns_the_same_task_from_the_partition_it_names(stub, rds: Any) -> None:
    for i in range(6):
        request_id = f"req-{i}"
        first = create(stub, cron_task(f"r{i}"), request_id=request_id)
        again = create(stub, cron_task(f"r{i}"), request_id=request_id)
        assert again.id == first.id
        assert partition_of(rds, first.id) == PARTS.of_request(request_id)
    assert len(list_all_tasks(stub)) == 6


def test_a_batch_lands_in_one_partition_and_a_retry_creates_nothing_more(stub, rds: Any) -> None:
    batch = pb.BatchCreateTasksRequest(
        requests=[pb.CreateTaskRequest(task=cron_task(f"b{i}"), request_id=f"b-{i}") for i in range(12)]
    )
    first = stub.BatchCreateTasks(batch, timeout=TIMEOUT).tasks
    assert {partition_of(rds, t.id) for t in first} == {PARTS.of_request("b-0")}
    again = stub.BatchCreateTasks(batch, timeout=TIMEOUT).tasks
    assert [t.id for t in again] == [t.id for t in first]
    assert len(list_all_tasks(stub)) == 12


def test_task_quota_counts_every_partition(stub, rds: Any) -> None:
    made = [create(stub, cron_task(f"q{i}", namespace="small")) for i in range(MAX_TASKS)]
    assert len({partition_of(rds, t.id) for t in made}) > 1  # the count is spread, the limit is not
    for _ in range(4):  # wherever the next one would go, the namespace is full
        err = rpc_error(
            lambda: create(stub, cron_task("over", namespace="small")), grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert f"holds {MAX_TASKS} tasks and may hold at most {MAX_TASKS}" in err.details()
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT)
    small = next(n for n in stats.namespaces if n.namespace == "small")
    assert (small.tasks, small.max_tasks) == (MAX_TASKS, MAX_TASKS)
    stub.DeleteTask(pb.DeleteTaskRequest(id=made[0].id), timeout=TIMEOUT)
    create(stub, cron_task("fits-again", namespace="small"))
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT)
    small = next(n for n in stats.namespaces if n.namespace == "small")
    assert (small.tasks, small.max_tasks) == (MAX_TASKS, MAX_TASKS)
    counts = {c.state: c.count for c in stats.tasks}
    assert counts[pb.TaskState.TASK_STATE_ACTIVE] == MAX_TASKS


def test_run_quota_global_history_and_stats_span_partitions(stub, rds: Any, backend: Backend) -> None:
    cluster = on_cluster(backend)
    tasks = one_per_partition(stub, rds, namespace="runner")
    runs = [stub.RunTask(pb.RunTaskRequest(id=t.id), timeout=TIMEOUT).execution for t in tasks.values()]
    runs.append(stub.RunTask(pb.RunTaskRequest(id=tasks[0].id), timeout=TIMEOUT).execution)
    err = rpc_error(  # the runs quota counts every partition's runs
        lambda: stub.RunTask(pb.RunTaskRequest(id=tasks[1].id), timeout=TIMEOUT),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert f"ran tasks {MAX_RUNS} times this minute" in err.details()
    for page_size in (1, 2):
        listed = list_all_executions(stub, page_size=page_size)
        assert sorted(e.id for e in listed) == sorted(e.id for e in runs)
        order = [(e.nominal_time.ToMilliseconds(), e.id) for e in listed]
        assert order == sorted(order, reverse=True)  # newest first across partitions
    for e in runs:  # each record is in its task's partition (on a cluster, on that one's primary)
        assert rds.exists(PARTS.execution(e.id).execution(e.id))
        assert PARTS.of_execution(e.id) == partition_of(rds, e.task_id)
        if cluster is not None:
            assert exists_on(owner(cluster, PARTS.of_execution(e.id)), PARTS.execution(e.id).execution(e.id))
        own = stub.ListExecutions(pb.ListExecutionsRequest(task_id=e.task_id), timeout=TIMEOUT).executions
        assert e.id in {x.id for x in own}
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT)
    created = len(list_all_tasks(stub))  # one_per_partition made at least P
    assert {c.state: c.count for c in stats.tasks}[pb.TaskState.TASK_STATE_ACTIVE] == created
    runner = next(n for n in stats.namespaces if n.namespace == "runner")
    assert runner.tasks == created


def test_audit_trail_lists_every_partitions_events(stub, rds: Any, channel: grpc.Channel) -> None:
    tasks = one_per_partition(stub, rds)
    for t in tasks.values():
        stub.DeleteTask(pb.DeleteTaskRequest(id=t.id), timeout=TIMEOUT)
    audit = pb.audit_service_grpc.AuditServiceStub(channel)
    events: list[pb.AuditEvent] = []
    token = ""
    while True:
        page = audit.ListAuditEvents(
            pb.ListAuditEventsRequest(page_size=3, page_token=token), timeout=TIMEOUT
        )
        events += page.events
        token = page.next_page_token
        if not token:
            break
    deleted = {e.task_id for e in events if e.action == pb.AuditAction.AUDIT_ACTION_DELETE_TASK}
    assert {t.id for t in tasks.values()} <= deleted
    assert len({e.id for e in events}) == len(events)


# --- the recorded partition count, on both backends ----------------------------------------------


def ready(backend: Backend, count: int) -> bool:
    """Store.ready of a store laid out in `count` partitions, on the backend."""

    async def check() -> bool:
        client = connect(backend.settings(partitions=count))
        try:
            return await Store(client, "ts", count).ready()
        finally:
            await client.aclose()

    return asyncio.run(check())


def test_a_store_refuses_data_laid_out_in_another_count(backend: Backend, rds: Any) -> None:
    ready(backend, P)
    assert rds.get(Keys().partition_count) == str(P).encode()
    ready(backend, P)  # the same count again: fine
    with pytest.raises(
        SettingsError, match=f"PARTITIONS: this Redis holds data laid out in {P} partitions, not 2"
    ):
        ready(backend, 2)


@pytest.mark.parametrize("module", ["services.api", "services.scheduler"])
def test_a_service_with_another_count_exits_with_status_2_naming_both(
    backend: Backend, rds: Any, module: str
) -> None:
    rds.set(Keys().partition_count, P)
    env = process_env(**{**backend.env(), "GRPC_HOST": "127.0.0.1", "GRPC_PORT": "0", "PARTITIONS": "2"})
    done = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert (
        f"configuration error: PARTITIONS: this Redis holds data laid out in {P} partitions, not 2"
        in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_data_from_before_the_count_was_recorded_counts_as_one_partition(backend: Backend, rds: Any) -> None:
    rds.zadd(Keys().by_name, {"legacy\x000000000000000003": 0})  # a task stored before PARTITIONS
    with pytest.raises(SettingsError, match="holds data laid out in 1 partitions, not 4"):
        ready(backend, 4)
    assert rds.get(Keys().partition_count) == b"1"
    assert ready(backend, 1)
