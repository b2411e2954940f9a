"""Faults of a real Redis Cluster under a burst of once-tasks (docs/partitions.md, "Cluster mode"
and "Tests this design needs"): 3 primaries with a replica each, a short cluster-node-timeout,
12 partitions; the api in-process, a scheduler and an executor as processes.

1. A slot holding a partition is migrated between primaries while its tasks are created and
   fire (redis-cli --cluster reshard's steps, RedisCluster.migrate_slot): every task created has
   exactly one execution record, SUCCEEDED; clients see OK or UNAVAILABLE (retried), never
   UNKNOWN or INTERNAL; the slot and its keys are on the new primary afterwards.
2. A primary killed with SIGKILL mid-burst, its replica promoted, with REDIS_WAIT_REPLICAS=1:
   no CreateTask acknowledged to a client is lost; while the promoted primary has no replica its
   partitions' writes are refused (UNAVAILABLE), not acknowledged unreplicated; every execution
   of every task ends terminal (one record per task); the api and the scheduler say NOT_SERVING,
   then SERVING again by themselves. Without REDIS_WAIT_REPLICAS (the default) replication is
   asynchronous: a CreateTask acknowledged in the last moments before the kill (what the replica
   had not yet received, typically under a millisecond of writes, unbounded if the link lagged)
   can be lost; the scheduler's own writes are redone (fired again, reclaimed).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from redis.crc import key_slot

from schedcore import pb
from schedcore.store.keys import Partitions
from tests.integration.cluster_support import cluster_suite, code_of
from tests.integration.engine_support import TERMINAL, Suite, once_in
from tests.integration.helpers import TIMEOUT
from tests.support import RedisCluster, RedisServer, redis_cluster, serving, wait_for

P = 12
PARTS = Partitions("ts", P)
OK, UNAVAILABLE = grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE
SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
# The engine's: a partition unworked for a while (its slot moving, its primary failing over) does
# not turn its due occurrences into missed ones on this slow machine.
ENV = {"MISSED_TOLERANCE_SECONDS": "60"}


@pytest.fixture()
def own_cluster() -> Iterator[RedisCluster]:
    """3 primaries with a replica each; a lost primary's replica takes over within about 2 s."""
    with redis_cluster(masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        yield cluster


class Clients:
    """Client threads of the api: `burst` creates once-tasks due about now, a prober keeps
    calling CreateTask, GetTask and ListTasks; every status code is counted per call. A create
    carries a request id (its task's name) and is retried on UNAVAILABLE until acknowledged, so
    it is never made twice; a retry that comes after its run time is refused (INVALID_ARGUMENT)
    and given up: that task may exist or not."""

    def __init__(self, s: Suite, deadline_s: float = 60.0) -> None:
        self.channel = grpc.insecure_channel(s.api.target)
        self.stub = pb.task_service_grpc.TaskServiceStub(self.channel)
        self.codes: collections.Counter[tuple[str, grpc.StatusCode]] = collections.Counter()
        self.acknowledged: dict[str, str] = {}  # request id -> task id
        self.created = 0  # creates ended (acknowledged or given up), counted as they come
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.deadline = time.monotonic() + deadline_s
        self.threads: list[threading.Thread] = []
        self.ids = itertools.count()
        self.last_error = ""

    def call(self, name: str, call: Callable[[], object]) -> grpc.StatusCode:
        try:
            call()
            code = OK
        except grpc.RpcError as err:
            code = err.code()
            self.last_error = f"{name}: {code.name} {err.details()}"
            if code is grpc.StatusCode.INVALID_ARGUMENT and "run_time: is in the past" in str(err.details()):
                name = "create retried too late"
        with self.lock:
            self.codes[(name, code)] += 1
        return code

    def create(self, request_id: str, due_in_s: float = 2.0) -> None:
        task = pb.Task(name=request_id, schedule=once_in(due_in_s), target=pb.Target(log=pb.LogTarget()))
        request = pb.CreateTaskRequest(task=task, request_id=request_id)
        made: list[pb.Task] = []

        def once() -> None:
            made.append(self.stub.CreateTask(request, timeout=TIMEOUT).task)

        while time.monotonic() < self.deadline:
            code = self.call("create", once)
            if code is OK:
                with self.lock:
                    self.acknowledged[request_id] = made[-1].id
            if code is not UNAVAILABLE:
                with self.lock:
                    self.created += 1
                return
            time.sleep(0.05)
        raise AssertionError(f"CreateTask {request_id} not acknowledged in time: {self.last_error}")

    def burst(self, count: int, threads: int = 4) -> None:
        """Start creating `count` tasks from `threads` threads."""
        for t in range(threads):
            names = [f"burst-{i}" for i in range(t, count, threads)]
            self._start(lambda names=names: [self.create(name) for name in names])

    def probe(self) -> None:
        """Start the prober: CreateTask, GetTask and ListTasks in turn until stopped."""

        def run() -> None:
            while not self.stop.is_set():
                self.create(f"probe-{next(self.ids)}")
                last = list(self.acknowledged.values())[-1]
                self.call(
                    "get", lambda last=last: self.stub.GetTask(pb.GetTaskRequest(id=last), timeout=TIMEOUT)
                )
                self.call(
                    "list", lambda: self.stub.ListTasks(pb.ListTasksRequest(page_size=50), timeout=TIMEOUT)
                )

        self._start(run)

    def _start(self, run: Callable[[], object]) -> None:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(70)
            assert not thread.is_alive()
        self.channel.close()

    def refused(self) -> set[tuple[str, grpc.StatusCode]]:
        """Calls that ended other than OK or UNAVAILABLE (UNKNOWN, INTERNAL, ...), but for late
        retries."""
        late = ("create retried too late", grpc.StatusCode.INVALID_ARGUMENT)
        return {key for key in self.codes if key[1] not in (OK, UNAVAILABLE) and key != late}


def executions_by_task(s: Suite) -> dict[str, list[pb.Execution]]:
    by_task: dict[str, list[pb.Execution]] = collections.defaultdict(list)
    for execution in s.executions():
        by_task[execution.task_id].append(execution)
    return by_task


def wait_all_ended(s: Suite, task_ids: set[str], timeout: float) -> dict[str, list[pb.Execution]]:
    """Until every task in `task_ids` has an execution and every execution is terminal."""
    found: dict[str, list[pb.Execution]] = {}

    def ended() -> bool:
        nonlocal found
        found = executions_by_task(s)
        return task_ids <= found.keys() and all(e.status in TERMINAL for runs in found.values() for e in runs)

    wait_for(ended, timeout, 0.5)
    return found


def partition_on(cluster: RedisCluster, node: RedisServer) -> int:
    """A partition whose slot `node` serves."""
    return next(p for p in range(P) if cluster.owner(key_slot(PARTS.all[p].by_name.encode())) is node)


def keys_in(node: RedisServer, slot: int) -> int:
    with contextlib.closing(node.client()) as client:
        return int(client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))


def test_a_slot_migrating_under_a_burst_loses_and_repeats_nothing(own_cluster: RedisCluster) -> None:
    cluster = own_cluster
    source, target = cluster.masters[0], cluster.masters[1]
    moving = partition_on(cluster, source)
    slot = key_slot(PARTS.all[moving].by_name.encode())
    with cluster_suite(cluster, P, **ENV) as s:
        clients = Clients(s)
        clients.probe()
        clients.burst(2000)
        # The slot starts moving once its partition holds tasks, while the rest are created and
        # the first ones fire (each is due a second after its creation).
        wait_for(lambda: clients.created >= 1000, 30, 0.05)
        started = time.monotonic()
        moved = cluster.migrate_slot(slot, target, batch=10, pause_s=0.1)
        migration_s = time.monotonic() - started
        wait_for(lambda: clients.created >= 2000, 60, 0.1)
        clients.join()
        cluster.wait_ok()

        assert clients.refused() == set(), clients.codes
        tasks = _all_tasks(s)
        task_ids = {t.id for t in tasks}
        assert len({t.name for t in tasks}) == len(tasks)  # one task per request id
        assert set(clients.acknowledged.values()) <= task_ids
        found = wait_all_ended(s, task_ids, 40)
        assert found.keys() == task_ids  # nothing fired that was not created
        not_once = {
            t: [e.status for e in found[t]] for t in task_ids if [e.status for e in found[t]] != [SUCCEEDED]
        }
        assert not_once == {}
        in_moving = sum(PARTS.of_task(t) == moving for t in task_ids)
        assert cluster.owner(slot) is target
        assert keys_in(source, slot) == 0 and keys_in(target, slot) > in_moving
        print(
            f"{len(task_ids)} tasks ({in_moving} in the moving partition), {moved} keys moved in "
            f"{migration_s:.1f} s; codes {dict(clients.codes)}"
        )


class Health:
    """Polls the api's and the scheduler's health: whether each was seen NOT_SERVING."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.down: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.down |= {name for name, port in self.ports.items() if not serving(port)}
            time.sleep(0.05)

    def serving(self) -> bool:
        return all(serving(port) for port in self.ports.values())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def test_a_primary_killed_mid_burst_loses_no_acknowledged_create(own_cluster: RedisCluster) -> None:
    cluster = own_cluster
    victim = cluster.masters[0]
    lost = partition_on(cluster, victim)
    elsewhere = next(
        p for p in range(P) if cluster.owner(key_slot(PARTS.all[p].by_name.encode())) is not victim
    )
    with cluster_suite(cluster, P, api={"redis_wait_replicas": 1}, **ENV) as s:
        health = Health({"api": s.api.port, "scheduler": s.scheduler_port})
        clients = Clients(s)
        clients.burst(1500, threads=3)
        # Mid-burst: the first tasks fire (each is due 2 s after its creation), more are created.
        wait_for(
            lambda: len(s.stub.ListExecutions(pb.ListExecutionsRequest(page_size=30)).executions) >= 30, 30
        )
        fired, created = len(s.executions()), clients.created
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)  # kill -9: no goodbye, unreplicated writes gone
        victim.proc.wait(5)
        # Its replica is promoted; with no replica of its own yet, WAIT 1 refuses its writes.
        cluster.wait_ok()
        promoted = cluster.owner(key_slot(PARTS.all[lost].by_name.encode()))
        assert promoted is not victim
        with pytest.raises(grpc.RpcError) as refused:
            clients.stub.CreateTask(_create_in(lost), timeout=TIMEOUT)
        assert refused.value.code() is UNAVAILABLE and "REDIS_WAIT_REPLICAS" in refused.value.details()
        assert code_of(lambda: clients.stub.CreateTask(_create_in(elsewhere), timeout=TIMEOUT)) is OK
        victim.start()  # back, as the promoted one's replica (its nodes.conf kept)
        cluster.wait_ok()
        wait_for(lambda: clients.created >= 1500, 60, 0.1)
        clients.join()

        # The api and the scheduler were NOT_SERVING and are SERVING again, with no restart.
        wait_for(health.serving, 20, 0.2)
        health.close()
        assert health.down == {"api", "scheduler"}
        assert clients.refused() == set(), clients.codes
        # No acknowledged create is lost: every one is there.
        listed = {t.id for t in _all_tasks(s)}
        acknowledged = set(clients.acknowledged.values())
        assert acknowledged <= listed, sorted(acknowledged - listed)
        # Every execution of every task there is ends, one per task.
        found = wait_all_ended(s, listed, 40)
        assert all(len(found[t]) == 1 for t in listed), {
            t: len(found[t]) for t in listed if len(found[t]) != 1
        }
        statuses = collections.Counter(pb.ExecutionStatus.Name(runs[0].status) for runs in found.values())
        print(
            f"{len(listed)} tasks, {fired} fired and {created} created at the kill, executions "
            f"{dict(statuses)}; codes {dict(clients.codes)}"
        )


def _create_in(partition: int) -> pb.CreateTaskRequest:
    """A create whose request id sends it to `partition`."""
    request_id = next(f"probe-{i}" for i in itertools.count() if PARTS.of_request(f"probe-{i}") == partition)
    task = pb.Task(name=request_id, schedule=once_in(1.0), target=pb.Target(log=pb.LogTarget()))
    return pb.CreateTaskRequest(task=task, request_id=request_id)


def _all_tasks(s: Suite) -> list[pb.Task]:
    out: list[pb.Task] = []
    token = ""
    while True:
        page = s.stub.ListTasks(pb.ListTasksRequest(page_size=1000, page_token=token), timeout=TIMEOUT)
        out += page.tasks
        token = page.next_page_token
        if not token:
            return out
