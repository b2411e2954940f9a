"""The engine on a Redis Cluster, and what a lost node does to calls (docs/partitions.md, "Cluster
mode"): a scheduler and an executor process fire and complete once-tasks in every partition; a
call needing a node that is down gets UNAVAILABLE (never INTERNAL or UNKNOWN), health says
NOT_SERVING, and both come back by themselves once the node is back or its replica promoted."""

from __future__ import annotations

import base64
import secrets as random
import signal
from collections.abc import Callable, Iterator

import grpc
import pytest
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient
from redis.crc import key_slot

from schedcore import pb
from schedcore.store.keys import Partitions
from tests import alert_receiver
from tests.integration.cluster_support import cluster_api, cluster_state, cluster_suite, code_of
from tests.integration.engine_support import http, once_in
from tests.integration.helpers import TIMEOUT, create, cron_task
from tests.support import RedisCluster, redis_cluster, serving, wait_for

P = 4
PARTS = Partitions("ts", P)
SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED


def test_once_tasks_in_every_partition_fire_once_and_complete(cluster: RedisCluster) -> None:
    with cluster_suite(cluster, P) as s:
        made: dict[int, list[pb.Task]] = {p: [] for p in range(P)}
        i = 0
        while min(len(v) for v in made.values()) < 3:
            task = s.create(f"once-{i}", once_in(1.5))
            made[PARTS.of_task(task.id)].append(task)
            i += 1
        for tasks in made.values():
            for task in tasks:
                runs = s.wait_terminal(task.id, 1, timeout=20)
                assert [e.status for e in runs] == [SUCCEEDED], (task.id, runs)
        # Every occurrence recorded once, and nothing more fired meanwhile.
        assert len(s.executions()) == i


@pytest.fixture()
def own_cluster() -> Iterator[RedisCluster]:
    """A cluster of 3 primaries, each with a replica, that a test may break."""
    with redis_cluster(masters=3, replicas=1) as cluster:
        yield cluster


def test_a_lost_primary_gives_unavailable_until_its_replica_takes_over(own_cluster: RedisCluster) -> None:
    api = cluster_api(own_cluster, P)
    try:
        with grpc.insecure_channel(api.target) as channel:
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            tasks: dict[int, pb.Task] = {}
            while len(tasks) < P:
                task = create(stub, cron_task("t"))
                tasks.setdefault(PARTS.of_task(task.id), task)
            victim = own_cluster.owner(key_slot(PARTS.all[1].by_name.encode()))
            assert victim.proc is not None
            victim.proc.send_signal(signal.SIGKILL)  # kill -9: no goodbye to the cluster
            victim.proc.wait(5)

            calls: dict[str, Callable[[], object]] = {
                "get": lambda: stub.GetTask(pb.GetTaskRequest(id=tasks[1].id), timeout=TIMEOUT),
                "list": lambda: stub.ListTasks(pb.ListTasksRequest(page_size=100), timeout=TIMEOUT),
                "create": lambda: create(stub, cron_task("during")),
                "stats": lambda: stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT),
                "run": lambda: stub.RunTask(pb.RunTaskRequest(id=tasks[1].id), timeout=TIMEOUT),
            }
            # Until the replica is promoted (about cluster-node-timeout), calls needing the lost
            # node get UNAVAILABLE; the others succeed. Never anything else.
            seen: set[grpc.StatusCode] = set()
            for _ in range(3):
                for name, call in calls.items():
                    code = code_of(call)
                    assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), (name, code)
                    seen.add(code)
            assert grpc.StatusCode.UNAVAILABLE in seen
            # The replica is promoted; every call works again, with no restart of the api.
            wait_for(lambda: all(code_of(call) is grpc.StatusCode.OK for call in calls.values()), 30, 0.2)
            wait_for(lambda: serving(api.port), 10)
            assert stub.GetTask(pb.GetTaskRequest(id=tasks[1].id), timeout=TIMEOUT).task.id == tasks[1].id
    finally:
        api.stop()


def test_a_partition_without_any_node_is_unavailable_and_health_follows() -> None:
    with redis_cluster(masters=3, replicas=0) as cluster:
        api = cluster_api(cluster, P)
        try:
            with grpc.insecure_channel(api.target) as channel:
                stub = pb.task_service_grpc.TaskServiceStub(channel)
                owners = {
                    p: cluster.owner(key_slot(keys.by_name.encode())) for p, keys in enumerate(PARTS.all)
                }
                victim = owners[0]
                tasks: dict[int, pb.Task] = {}
                while len(tasks) < P:
                    task = create(stub, cron_task("t"))
                    tasks.setdefault(PARTS.of_task(task.id), task)
                task = tasks[0]
                elsewhere = next(t for p, t in tasks.items() if owners[p] is not victim)
                victim.stop()
                get = lambda: stub.GetTask(pb.GetTaskRequest(id=task.id), timeout=TIMEOUT)  # noqa: E731
                assert code_of(get) is grpc.StatusCode.UNAVAILABLE
                listing = lambda: stub.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT)  # noqa: E731
                assert code_of(listing) is grpc.StatusCode.UNAVAILABLE
                wait_for(lambda: not serving(api.port), 10)
                # Once the others count the node as failed, the whole cluster refuses
                # (CLUSTERDOWN: every slot must be served), also for a partition on a live node.
                wait_for(lambda: all(cluster_state(n) == "fail" for n in cluster.running()), 15, 0.1)
                other = lambda: stub.GetTask(pb.GetTaskRequest(id=elsewhere.id), timeout=TIMEOUT)  # noqa: E731
                assert code_of(other) is grpc.StatusCode.UNAVAILABLE
                victim.start()  # its data and nodes.conf kept: it serves its slots again
                cluster.wait_ok()
                wait_for(lambda: code_of(get) is grpc.StatusCode.OK, 20, 0.2)
                wait_for(lambda: serving(api.port), 10)
                assert code_of(listing) is grpc.StatusCode.OK
        finally:
            api.stop()


def test_alerts_are_raised_and_delivered_in_every_partition(cluster: RedisCluster) -> None:
    """A failing task in each partition raises FAILING in its own slot (the notification keys
    share the partition's hash tag) and its webhook arrives, signed."""
    secret = "whsec_" + base64.b64encode(random.token_bytes(32)).decode()
    receiver = alert_receiver.start()
    client = ClusterClient(startup_nodes=[ClusterNode(h, p) for h, p in cluster.seeds])
    try:
        with cluster_suite(cluster, P, ALERT_TIMEOUT_SECONDS="1") as s:
            hook = pb.WebhookChannel(url=f"{receiver.url}/hook", signing_secrets=[secret])
            channel_id = s.create_channel(pb.Channel(name="ops", webhook=hook))
            made: dict[int, pb.Task] = {}
            i = 0
            while len(made) < P:
                every = pb.Schedule(interval=pb.IntervalSchedule())
                every.interval.every.FromMilliseconds(1_000)
                alerts = pb.AlertPolicy(channel_ids=[channel_id], consecutive_failures=1)
                task = s.create(f"failing-{i}", every, http(f"{receiver.url}/target/500"), alerts=alerts)
                made.setdefault(PARTS.of_task(task.id), task)
                i += 1
            wanted = {t.id for t in made.values()}
            wait_for(lambda: wanted <= {r.json["data"]["task"]["id"] for r in receiver.notifications()}, 30)
            for r in receiver.notifications():
                assert alert_receiver.verify(secret, r.headers, r.body)
            for p, task in made.items():
                [nid] = [r.id for r in receiver.notifications() if r.json["data"]["task"]["id"] == task.id]
                key = PARTS.all[p].notification(nid)
                wait_for(lambda key=key: client.hget(key, "st") == b"d", 10)  # type: ignore[misc]
    finally:
        client.close()
        receiver.close()
