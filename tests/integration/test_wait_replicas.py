"""REDIS_WAIT_REPLICAS (docs/partitions.md, "Acknowledged writes"): every write the api
acknowledges waits for that many replicas of the primary that took it; fewer in time is
UNAVAILABLE, though the write stands, and a create retried with its request id is not made twice.
On a cluster the WAIT goes to the write's own primary (redis-py would send it to its default
node), checked by stopping one primary's replica: its partitions' writes fail, the others' pass."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

import grpc
import redis
from redis.crc import key_slot

from schedcore import pb
from schedcore.store.keys import Keys, Partitions
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.cluster_support import cluster_api
from tests.integration.helpers import TIMEOUT, create, cron_task
from tests.support import RedisServer, ServiceThread, redis_cluster, redis_server, wait_for

KEYS = Keys("ts")
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _fails(call: Callable[[], object]) -> str:
    """`call` fails with UNAVAILABLE, naming REDIS_WAIT_REPLICAS: its message."""
    try:
        call()
    except grpc.RpcError as err:
        assert err.code() is UNAVAILABLE, err
        assert "REDIS_WAIT_REPLICAS" in err.details() and "may have been applied" in err.details()
        return str(err.details())
    raise AssertionError("the write was acknowledged without its replica")


def _acknowledging(primary: RedisServer) -> bool:
    """The replica acknowledges a write made now. "online" in INFO is not enough: the primary
    puts a replica online at its first acknowledgement after the sync, and the command stream
    then reached a just-loaded replica more than 500 ms late on a loaded machine."""
    with contextlib.closing(primary.client()) as client:
        client.set("replica-probe", 1)
        acknowledged = int(client.wait(1, 200))
        client.delete("replica-probe")
    return acknowledged >= 1


@contextlib.contextmanager
def _replica_of(primary: RedisServer) -> Iterator[redis.Redis]:
    with contextlib.closing(primary.client()) as client:
        client.config_set("repl-diskless-sync-delay", 0)  # the first sync at once, not in 5 s
    # No append-only file: a replica rewriting its first one refuses to stop (SIGTERM).
    replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(primary.port), "--appendonly", "no"])
    replica.start()
    client = replica.client()
    try:
        wait_for(lambda: _acknowledging(primary), 10)
        yield client
    finally:
        client.close()
        replica.cleanup()


def test_every_acknowledged_write_waits_for_a_replica_of_one_redis() -> None:
    with redis_server() as primary:
        # WAIT for up to half of REDIS_TIMEOUT_SECONDS: 500 ms.
        api = ServiceThread(build_api, api_settings(primary.url, redis_wait_replicas=1, redis_timeout_s=1.0))
        rds = primary.client()
        try:
            with grpc.insecure_channel(api.target) as channel:
                tasks = pb.task_service_grpc.TaskServiceStub(channel)
                tokens = pb.auth_service_grpc.AuthServiceStub(channel)
                writes: dict[str, Callable[[str], object]] = {
                    "update": lambda task_id: tasks.UpdateTask(
                        pb.UpdateTaskRequest(
                            task=pb.Task(id=task_id, description="d"), update_mask={"paths": ["description"]}
                        ),
                        timeout=TIMEOUT,
                    ),
                    "pause": lambda task_id: tasks.PauseTask(
                        pb.PauseTaskRequest(id=task_id), timeout=TIMEOUT
                    ),
                    "resume": lambda task_id: tasks.ResumeTask(
                        pb.ResumeTaskRequest(id=task_id), timeout=TIMEOUT
                    ),
                    "run": lambda task_id: tasks.RunTask(pb.RunTaskRequest(id=task_id), timeout=TIMEOUT),
                    "batch": lambda _: tasks.BatchCreateTasks(
                        pb.BatchCreateTasksRequest(requests=[pb.CreateTaskRequest(task=cron_task("batch"))]),
                        timeout=TIMEOUT,
                    ),
                    "token": lambda _: tokens.CreateToken(
                        pb.CreateTokenRequest(token=pb.Token(name="t", role=pb.Role.ROLE_VIEWER)),
                        timeout=TIMEOUT,
                    ),
                }
                # No replica: every write is refused, yet applied on the primary.
                _fails(lambda: create(tasks, cron_task("first"), "req-1"))
                [first] = tasks.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT).tasks
                for write in writes.values():
                    _fails(lambda: write(first.id))  # noqa: B023 - called at once
                task = tasks.GetTask(pb.GetTaskRequest(id=first.id), timeout=TIMEOUT).task
                assert (task.description, task.etag) == ("d", "4")  # updated, paused, resumed
                assert rds.zcard(KEYS.history) == 1 and rds.zcard(KEYS.by_name) == 2  # run, batch
                [member] = rds.zrange(KEYS.tokens, 0, -1)
                token_id = member.decode().split(":")[1]
                _fails(lambda: tokens.RevokeToken(pb.RevokeTokenRequest(id=token_id), timeout=TIMEOUT))
                assert rds.hget(KEYS.token(token_id), "rtime") is not None
                listed = tasks.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT).tasks
                batch = next(t for t in listed if t.name == "batch")
                _fails(lambda: tasks.DeleteTask(pb.DeleteTaskRequest(id=batch.id), timeout=TIMEOUT))
                assert not rds.exists(KEYS.task(batch.id))

                with _replica_of(primary) as replica:
                    # The create retried with its request id: the task it made, not a second one.
                    assert create(tasks, cron_task("first"), "req-1").id == first.id
                    assert rds.zcard(KEYS.by_name) == 1
                    # Each acknowledged write is on the replica when the client gets its answer.
                    again = create(tasks, cron_task("again"))
                    assert replica.hget(KEYS.task(again.id), "rev") == b"1"
                    for write in writes.values():
                        write(again.id)
                    assert replica.hget(KEYS.task(again.id), "rev") == b"4"
                    assert replica.zcard(KEYS.history) == 2 and replica.zcard(KEYS.tokens) == 2
                    tasks.DeleteTask(pb.DeleteTaskRequest(id=again.id), timeout=TIMEOUT)
                    assert not replica.exists(KEYS.task(again.id))
        finally:
            rds.close()
            api.stop()


def test_on_a_cluster_the_wait_goes_to_the_primary_that_took_the_write() -> None:
    parts = Partitions("ts", 3)
    with redis_cluster(masters=3, replicas=1) as cluster:
        api = cluster_api(cluster, 3, redis_wait_replicas=1, redis_timeout_s=0.5)
        try:
            with grpc.insecure_channel(api.target) as channel:
                stub = pb.task_service_grpc.TaskServiceStub(channel)
                owners = [cluster.owner(key_slot(keys.by_name.encode())) for keys in parts.all]
                stalled = owners[0]
                fine = next(p for p in range(3) if owners[p] is not stalled)
                request = {p: _request_id_in(parts, p) for p in (0, fine)}
                [replica] = [node for node in cluster.replicas if _primary_port(node) == stalled.port]
                assert replica.proc is not None
                replica.proc.send_signal(signal.SIGSTOP)  # it stops acknowledging its primary's writes
                try:
                    _fails(lambda: create(stub, cron_task("stalled"), request[0]))
                    # Another primary's replica acknowledges: a WAIT sent anywhere else (redis-py's
                    # default node) or on another connection would not tell these apart.
                    create(stub, cron_task("fine"), request[fine])
                finally:
                    replica.proc.send_signal(signal.SIGCONT)
                made = create(stub, cron_task("stalled"), request[0])  # acknowledged now, once
                assert parts.of_task(made.id) == 0
                names = [t.name for t in stub.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT).tasks]
                assert sorted(names) == ["fine", "stalled"]
        finally:
            api.stop()


def _request_id_in(parts: Partitions, partition: int) -> str:
    """A request id whose create goes to `partition`."""
    return next(f"req-{i}" for i in range(1000) if parts.of_request(f"req-{i}") == partition)


def _primary_port(node: RedisServer) -> int:
    with contextlib.closing(node.client()) as client:
        return int(client.info("replication")["master_port"])
