"""`schedctl partitions migrate` (docs/partitions.md, "Changing P (offline)"): data written through
the api with one count reads the same through an api with another, every key sits in the
partition its id names, the counters sum to what the tasks hold, a dropped partition leaves no
key, a killed run is finished by running it again, and a running scheduler stops it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from redis.crc import key_slot

from schedcore import pb
from schedcore.redisconn import connect
from schedcore.settings import SettingsError
from schedcore.store import Store
from schedcore.store.keys import Keys, Partitions
from schedcore.store.migrate import parse_record
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.engine_support import Suite, once_in
from tests.integration.helpers import (
    create,
    list_all_executions,
    list_all_tasks,
    once_task,
    stop_service,
)
from tests.support import (
    RedisServer,
    ServiceThread,
    free_port,
    redis_cluster,
    redis_server,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as srv:
        yield srv


@pytest.fixture()
def db(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    client.flushall()
    yield client
    client.flushall()
    client.close()


@contextlib.contextmanager
def api_at(url: str, partitions: int, **extra: object) -> Iterator[grpc.Channel]:
    service = ServiceThread(build_api, api_settings(url, partitions=partitions, **extra))
    channel = grpc.insecure_channel(service.target)
    try:
        yield channel
    finally:
        channel.close()
        stop_service(service)


def tasks_of(channel: grpc.Channel) -> pb.task_service_grpc.TaskServiceStub:
    return pb.task_service_grpc.TaskServiceStub(channel)


def populate(channel: grpc.Channel, count: int = 40) -> dict[str, tuple[pb.Task, str]]:
    """Tasks of every kind the layout holds: paused and active, with request ids, run by hand
    (pending executions in `ready`), and one deleted after it ran (executions with no task).
    Returns request id -> (the task sent, its id)."""
    stub = tasks_of(channel)
    requests: dict[str, tuple[pb.Task, str]] = {}
    for i in range(count):
        task = once_task(f"task-{i:03d}", in_s=3600 + i)
        request = f"req-{i}" if i % 3 == 0 else ""
        made = create(stub, task, request_id=request)
        if request:
            requests[request] = (task, made.id)
        if i % 5 == 1:
            stub.PauseTask(pb.PauseTaskRequest(id=made.id))
        if i % 4 == 2:
            stub.RunTask(pb.RunTaskRequest(id=made.id))
    gone = create(stub, once_task("deleted-after-a-run"))
    stub.RunTask(pb.RunTaskRequest(id=gone.id))
    stub.DeleteTask(pb.DeleteTaskRequest(id=gone.id))
    return requests


def view(channel: grpc.Channel) -> dict[str, object]:
    """What users see: every task and execution, the stats, the audit trail's events (ids aside:
    merged partitions renumber them)."""
    stub = tasks_of(channel)
    stats = stub.GetStats(pb.GetStatsRequest())
    audit = pb.audit_service_grpc.AuditServiceStub(channel)
    events: list[tuple[int, int, str, str, str]] = []
    token = ""
    while True:
        page = audit.ListAuditEvents(pb.ListAuditEventsRequest(page_token=token, page_size=500))
        events += [
            (e.time.ToMilliseconds(), e.action, e.task_id, e.execution_id, e.request_id) for e in page.events
        ]
        token = page.next_page_token
        if not token:
            break
    return {
        "tasks": sorted((t.id, t.name, t.state, t.etag) for t in list_all_tasks(stub)),
        "executions": sorted((e.id, e.status) for e in list_all_executions(stub)),
        "by_state": sorted((c.state, c.count) for c in stats.tasks),
        "pending": stats.pending_executions,
        "usage": sorted((u.namespace, u.tasks, u.task_bytes) for u in stats.namespaces),
        "audit": sorted(events),
    }


def misplaced(db: redis.Redis | redis.RedisCluster, count: int) -> list[str]:
    """Keys in a partition past `count`, and keys of a task or an execution outside the
    partition its id names under `count`."""
    parts = Partitions("ts", count)
    wrong = []
    for raw in db.scan_iter(match="ts:{*}:*", count=1000):
        key = raw.decode()
        partition = int(key[key.index("{") + 1 : key.index("}")])
        kind, _, ident = key.split("}:", 1)[1].partition(":")
        if partition >= count or (
            kind in ("task", "hist", "exec") and ident and parts.of_task(ident[:16]) != partition
        ):
            wrong.append(key)
    return wrong


def migrate(url: str, to: int, *more: str, **env: str) -> subprocess.CompletedProcess[str]:
    """schedctl partitions migrate as a process, with the services' Redis settings."""
    return subprocess.run(
        [sys.executable, "-m", "cli", "partitions", "migrate", "--to", str(to), *more],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": url, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def record(db: redis.Redis | redis.RedisCluster) -> tuple[int, int | None, str]:
    raw = db.get(Keys().partition_count)
    assert isinstance(raw, bytes), raw
    return parse_record(raw)


def test_growing_then_shrinking_keeps_every_task_execution_count_and_event(
    server: RedisServer, db: redis.Redis
) -> None:
    with api_at(server.url, 1) as channel:
        requests = populate(channel)
        before = view(channel)
    assert before["pending"] and len(before["tasks"]) == 40  # type: ignore[arg-type]

    for count in (4, 3, 1):  # grow, shrink into fewer, back to one
        done = migrate(server.url, count)
        assert done.returncode == 0, done.stderr
        assert record(db) == (count, None, "")
        assert misplaced(db, count) == []
        with api_at(server.url, count) as channel:
            assert view(channel) == before, f"after migrating to {count}"
            stub = tasks_of(channel)
            for request, (task, task_id) in requests.items():  # a retry finds its task
                assert create(stub, task, request_id=request).id == task_id
            for i, task in enumerate(list_all_tasks(stub)):  # events and runs in every partition
                if i % 2 == count % 2:
                    stub.RunTask(pb.RunTaskRequest(id=task.id))
            before = view(channel)
        # every moved task's counters: stats and quota usage above agree; none left behind
        for p in range(count, 4):
            assert not db.exists(f"ts:{{{p}}}:stats:tasks", f"ts:{{{p}}}:audit")


def test_a_dry_run_counts_and_changes_nothing(server: RedisServer, db: redis.Redis) -> None:
    with api_at(server.url, 1) as channel:
        populate(channel, 12)
    keys = sorted(db.keys("*"))
    done = migrate(server.url, 4, "--dry-run", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert '"dryRun": true' in done.stdout and '"tasks": 0' not in done.stdout
    assert sorted(db.keys("*")) == keys


def test_a_killed_run_is_refused_by_services_and_finished_by_running_it_again(
    server: RedisServer, db: redis.Redis
) -> None:
    with api_at(server.url, 1) as channel:
        stub = tasks_of(channel)
        for start in range(0, 3000, 500):
            batch = [pb.CreateTaskRequest(task=once_task(f"bulk-{i:04d}")) for i in range(start, start + 500)]
            stub.BatchCreateTasks(pb.BatchCreateTasksRequest(requests=batch))
        before = view(channel)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "partitions", "migrate", "--to", "4"],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": server.url},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    said = []
    for line in proc.stderr:  # the first progress line: a thousand tasks moved, more to go
        said.append(line)
        if "1,000 of" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "".join(said)
    assert record(db)[:2] == (1, 4)
    assert misplaced(db, 4), "the kill came after the last move: nothing to resume"

    async def check() -> str:  # what a service started now says
        client = connect(api_settings(server.url, partitions=4))
        try:
            await Store(client, partitions=4).check_partitions()
        except SettingsError as exc:
            return str(exc)
        finally:
            await client.aclose()
        return ""

    assert "schedctl partitions migrate --to 4" in asyncio.run(check())
    other = migrate(server.url, 2)
    assert other.returncode == 1 and "finish it first" in other.stderr

    done = migrate(server.url, 4)
    assert done.returncode == 0, done.stderr
    assert misplaced(db, 4) == []
    with api_at(server.url, 4) as channel:
        assert view(channel) == before


def test_a_running_scheduler_stops_the_migration_until_it_stopped(
    server: RedisServer, db: redis.Redis
) -> None:
    s = Suite(server, ServiceThread(build_api, api_settings(server.url)), free_port(), [free_port()])
    try:
        populate(s.channel, 6)
        s.start_executor(s.executor_ports[0])
        scheduler = s.start_scheduler()  # one partition: a member all the same
        wait_for(lambda: db.zcard(Keys().schedulers) == 1, 10)
        done = migrate(server.url, 4)
        assert done.returncode == 1
        assert "schedulers are running" in done.stderr and "stop every service" in done.stderr
        assert record(db) == (1, None, "")
        assert misplaced(db, 1) == []
        scheduler.send_signal(signal.SIGTERM)  # leaves the membership on its way out
        scheduler.wait(15)
        s.api.stop()
        done = migrate(server.url, 4)
        assert done.returncode == 0, done.stderr
        assert misplaced(db, 4) == []
    finally:
        s.close()


def test_a_scheduler_fires_moved_tasks_once_in_their_new_partitions(
    server: RedisServer, db: redis.Redis
) -> None:
    with api_at(server.url, 1) as channel:
        stub = tasks_of(channel)
        made = [
            create(stub, pb.Task(name=f"soon-{i}", schedule=once_in(4), target=pb.Target(log=pb.LogTarget())))
            for i in range(8)
        ]
    assert migrate(server.url, 4).returncode == 0
    s = Suite(
        server, ServiceThread(build_api, api_settings(server.url, partitions=4)), free_port(), [free_port()]
    )
    try:
        s.start_executor(s.executor_ports[0], PARTITIONS="4")
        s.start_scheduler(PARTITIONS="4")

        def all_done() -> bool:
            runs = list_all_executions(s.stub)
            return len(runs) == len(made) and all(e.status == SUCCEEDED for e in runs)

        wait_for(all_done, 30)
        time.sleep(1.5)  # nothing more comes
        runs = list_all_executions(s.stub)
        assert sorted(e.task_id for e in runs) == sorted(t.id for t in made)
    finally:
        s.close()


def test_on_a_cluster_every_moved_key_lands_on_its_partitions_primary() -> None:
    with redis_cluster(masters=3) as cluster:
        seeds = {"redis_cluster_nodes": cluster.seeds}
        with api_at(cluster.url, 1, **seeds) as channel:
            populate(channel, 24)
            before = view(channel)
        db = redis.RedisCluster(host="127.0.0.1", port=cluster.masters[0].port)
        try:
            done = migrate(cluster.url, 6, REDIS_CLUSTER_NODES=cluster.seeds_env)
            assert done.returncode == 0, done.stderr
            assert record(db) == (6, None, "")
            assert misplaced(db, 6) == []
            holders = set()
            for p in range(6):  # each partition's keys are on the primary serving its slot
                owner = cluster.owner(key_slot(f"{{{p}}}".encode()))
                with contextlib.closing(owner.client()) as node:
                    held = node.keys(f"ts:{{{p}}}:task:*")
                assert len(held) == db.zcard(f"ts:{{{p}}}:idx:name")
                holders |= {owner.port} if held else set()
            assert len(holders) > 1
            with api_at(cluster.url, 6, **seeds) as channel:
                assert view(channel) == before
        finally:
            db.close()


def test_notifications_their_due_entries_lists_and_watch_entries_move_with_their_tasks(
    server: RedisServer, db: redis.Redis
) -> None:
    """docs/alerts.md, "Keys": the alert keys live in their task's partition, so a migration
    moves them (schedcore/store/migrate_alerts.py); written here in the documented layout, as
    the scheduler's scripts write them, so each kind of key is present."""
    with api_at(server.url, 1) as channel:
        ids = [create(tasks_of(channel), once_task(f"a-{i}")).id for i in range(12)]
    k = Keys()
    expected: dict[str, tuple[str, str]] = {}  # notification id -> (task id, state)
    for i, task_id in enumerate(ids):
        eid = f"{task_id}-{1_700_000_000_000 + i:013d}"
        for state, kind in (("p", "failing"), ("d", "recovered")):
            nid = f"{kind}.{eid}.{'c' * 16}"
            fields = {"k": 1, "t": task_id, "e": eid, "c": "c" * 16, "ns": "default", "m": "m", "at": 1}
            db.hset(k.notification(nid), mapping={**fields, "st": state, "a": 0})
            if state == "d":
                db.expire(k.notification(nid), 3600)
            else:
                db.zadd(k.notifications_due, {nid: 5})
            db.zadd(k.task_notifications(task_id), {nid: i})
            expected[nid] = (task_id, state)
        db.zadd(k.alert_watch, {f"l:5000:{eid}:default:{'c' * 16}": 9})

    def placed(count: int) -> None:
        parts = Partitions("ts", count)
        for nid, (task_id, state) in expected.items():
            home = parts.task(task_id)
            assert db.hget(home.notification(nid), "st") == state.encode(), (count, nid)
            assert db.zscore(home.task_notifications(task_id), nid) is not None
            assert (db.zscore(home.notifications_due, nid) == 5) == (state == "p")
            if state == "d":
                assert 0 < db.ttl(home.notification(nid)) <= 3600  # its expiry moved with it
        for p, keys in enumerate(parts.all):
            for member in db.zrange(keys.alert_watch, 0, -1):
                assert parts.of_task(member.decode().split(":")[2][:16]) == p
        assert sum(db.zcard(keys.alert_watch) for keys in parts.all) == len(ids)
        for p in range(count, 4):  # nothing left in a dropped partition
            assert db.keys(f"ts:{{{p}}}:*") == []

    four = Partitions("ts", 4)
    away = sum(four.of_task(task_id) != 0 for task_id, _ in expected.values())  # out of partition 0
    assert 0 < away < len(expected)
    for count in (4, 1):
        done = migrate(server.url, count, "-o", "json")
        assert done.returncode == 0, done.stderr
        assert f'"notifications": {away}' in done.stdout  # out, then back
        placed(count)
    again = migrate(server.url, 1, "-o", "json")
    assert again.returncode == 0 and '"notifications": 0' in again.stdout  # nothing out of place
