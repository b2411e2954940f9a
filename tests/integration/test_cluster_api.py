"""The task API on a Redis Cluster (docs/partitions.md, "Cluster mode"): 3 primaries with a
replica each, PARTITIONS=4. Every call works across partitions, and each partition's keys live on
the primary serving its slot, so the partitions spread over every primary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import pytest
import redis
from google.protobuf.field_mask_pb2 import FieldMask
from redis.crc import key_slot

from schedcore import pb
from schedcore.store.keys import Keys, Partitions
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import (
    TIMEOUT,
    create,
    cron_task,
    get,
    list_all_executions,
    list_all_tasks,
    rpc_error,
)
from tests.support import RedisCluster, RedisServer, ServiceThread

P = 4
PARTS = Partitions("ts", P)
MAX_TASKS = 9


def cluster_settings(cluster: RedisCluster, **overrides: object) -> object:
    return api_settings(cluster.url, redis_cluster_nodes=cluster.seeds, partitions=P, **overrides)


@pytest.fixture()
def api(cluster: RedisCluster) -> Iterator[ServiceThread]:
    settings = cluster_settings(
        cluster,
        namespace_max_tasks_overrides=(("small", MAX_TASKS),),
        namespace_max_runs_per_minute_overrides=(("runner", 5),),
    )
    service = ServiceThread(build_api, settings)  # type: ignore[arg-type]
    yield service
    service.stop()


@pytest.fixture()
def channel(api: ServiceThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(api.target) as channel:
        yield channel


@pytest.fixture()
def stub(channel: grpc.Channel) -> pb.task_service_grpc.TaskServiceStub:
    return pb.task_service_grpc.TaskServiceStub(channel)


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


def one_per_partition(stub, **fields: object) -> dict[int, pb.Task]:
    tasks: dict[int, pb.Task] = {}
    i = 0
    while len(tasks) < P:
        task = create(stub, cron_task(f"p{i:03d}", **fields))
        tasks.setdefault(PARTS.of_task(task.id), task)
        i += 1
    return tasks


def test_partitions_spread_over_every_primary(cluster: RedisCluster) -> None:
    owners = {p: owner(cluster, p).port for p in range(P)}
    assert set(owners.values()) == {m.port for m in cluster.masters}, owners


def test_tasks_of_every_partition_live_on_their_slots_primary(stub, cluster: RedisCluster) -> None:
    made = [create(stub, cron_task(f"t{i:02d}")) for i in range(24)]
    assert {PARTS.of_task(t.id) for t in made} == set(range(P))  # 24 draws over 4 partitions
    for t in made:
        keys = PARTS.task(t.id)
        node = owner(cluster, PARTS.of_task(t.id))
        assert exists_on(node, keys.task(t.id))
        assert all(not exists_on(other, keys.task(t.id)) for other in cluster.masters if other is not node)
        assert get(stub, t.id).name == t.name
        changed = pb.Task(id=t.id, description=f"changed {t.id}")
        stub.UpdateTask(
            pb.UpdateTaskRequest(task=changed, update_mask=FieldMask(paths=["description"])), timeout=TIMEOUT
        )
        assert get(stub, t.id).description == f"changed {t.id}"
    # Every partition's slot holds keys on its primary, and only its own tasks are indexed there.
    for p, keys in enumerate(PARTS.all):
        node = owner(cluster, p)
        with contextlib.closing(node.client()) as client:
            assert int(client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot(keys))) > 0
            members = {m.decode().rsplit("\x00", 1)[1] for m in client.zrange(keys.by_name, 0, -1)}
        assert members == {t.id for t in made if PARTS.of_task(t.id) == p}
    for t in made[:8]:
        stub.DeleteTask(pb.DeleteTaskRequest(id=t.id), timeout=TIMEOUT)
        rpc_error(lambda t=t: get(stub, t.id), grpc.StatusCode.NOT_FOUND)
        assert not exists_on(owner(cluster, PARTS.of_task(t.id)), PARTS.task(t.id).task(t.id))
    assert {t.id for t in list_all_tasks(stub)} == {t.id for t in made[8:]}


@pytest.mark.parametrize("order", [pb.TaskOrder.TASK_ORDER_NAME, pb.TaskOrder.TASK_ORDER_NEXT_RUN_TIME])
def test_list_tasks_pages_across_partitions_without_duplicate_or_gap(stub, order) -> None:
    made = [create(stub, cron_task(f"n{i:02d}", expression=f"{i % 60} * * * *")) for i in range(30)]
    seen: list[pb.Task] = []
    token = ""
    while True:
        page = stub.ListTasks(
            pb.ListTasksRequest(page_size=4, page_token=token, order_by=order), timeout=TIMEOUT
        )
        seen += page.tasks
        token = page.next_page_token
        if not token:
            break
    assert sorted(t.id for t in seen) == sorted(t.id for t in made)
    if order == pb.TaskOrder.TASK_ORDER_NAME:
        assert [t.name for t in seen] == sorted(t.name for t in made)
    else:
        keys = [(t.next_run_time.ToMilliseconds(), t.id) for t in seen]
        assert keys == sorted(keys)


def test_run_task_executions_quota_and_stats_span_the_cluster(stub, cluster: RedisCluster) -> None:
    tasks = one_per_partition(stub, namespace="runner")
    runs = [stub.RunTask(pb.RunTaskRequest(id=t.id), timeout=TIMEOUT).execution for t in tasks.values()]
    runs.append(stub.RunTask(pb.RunTaskRequest(id=tasks[0].id), timeout=TIMEOUT).execution)
    err = rpc_error(  # the runs quota counts every partition's runs (5 a minute)
        lambda: stub.RunTask(pb.RunTaskRequest(id=tasks[1].id), timeout=TIMEOUT),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert "ran tasks 5 times this minute" in err.details()
    listed = list_all_executions(stub, page_size=2)
    assert sorted(e.id for e in listed) == sorted(e.id for e in runs)
    order = [(e.nominal_time.ToMilliseconds(), e.id) for e in listed]
    assert order == sorted(order, reverse=True)
    for e in runs:  # each record is on its task's partition's primary
        assert exists_on(owner(cluster, PARTS.of_execution(e.id)), PARTS.execution(e.id).execution(e.id))
        own = stub.ListExecutions(pb.ListExecutionsRequest(task_id=e.task_id), timeout=TIMEOUT).executions
        assert e.id in {x.id for x in own}
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT)
    created = len(list_all_tasks(stub))  # one_per_partition made at least P
    assert {c.state: c.count for c in stats.tasks}[pb.TaskState.TASK_STATE_ACTIVE] == created
    runner = next(n for n in stats.namespaces if n.namespace == "runner")
    assert runner.tasks == created


def test_task_quota_counts_every_partition(stub) -> None:
    made = [create(stub, cron_task(f"q{i}", namespace="small")) for i in range(MAX_TASKS)]
    assert len({PARTS.of_task(t.id) for t in made}) > 1
    for _ in range(4):
        err = rpc_error(
            lambda: create(stub, cron_task("over", namespace="small")), grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert f"holds {MAX_TASKS} tasks and may hold at most {MAX_TASKS}" in err.details()
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT)
    small = next(n for n in stats.namespaces if n.namespace == "small")
    assert (small.tasks, small.max_tasks) == (MAX_TASKS, MAX_TASKS)


def test_audit_trail_lists_every_partitions_events(stub, channel: grpc.Channel) -> None:
    tasks = one_per_partition(stub)
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
