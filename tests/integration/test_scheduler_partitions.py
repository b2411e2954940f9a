"""The scheduler works every partition (docs/partitions.md, "Schedulers share partitions"), with
PARTITIONS=3 against a real redis-server: firing, dispatch, reclaim and results in each
partition, every script on one partition's keys. Task ids decide the partition (int(id, 16) % 3),
so the tasks here are stored with ids drawn in the partition each test wants.

Each test would fail if one partition were not worked: its tasks would not fire, its queued or
leased executions would never end.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any, cast

import redis

from schedcore import ipb, pb
from schedcore.store import Store
from schedcore.store.engine import DispatchItem
from schedcore.store.keys import Partitions, execution_id
from schedcore.timeutil import ms_to_ts
from services.scheduler.dispatch import Dispatcher
from services.scheduler.firing import Firer
from services.scheduler.plan import plan
from services.scheduler.results import Recorder
from tests.conftest import api_settings
from tests.integration.engine_harness import NoExecutors, Stores, run, spec_of
from tests.integration.engine_support import TERMINAL, suite
from tests.support import RedisServer, wait_for

S = pb.ExecutionStatus
P = 3
PARTS = Partitions(count=P)
ACTIVE = pb.TaskState.TASK_STATE_ACTIVE
YEARLY = "0 0 1 1 *"  # not due again during a test


def in_partition(p: int) -> str:
    return PARTS.id_in(p, secrets.randbits(64))


def once_spec(name: str, run_ms: int) -> pb.Task:
    spec = pb.Task(name=name)
    spec.schedule.once.run_time.CopyFrom(ms_to_ts(run_ms))
    spec.target.log.SetInParent()
    return spec


async def store_task(store: Store, p: int, spec: pb.Task, next_ms: int | None) -> str:
    task_id = in_partition(p)
    spec.id = task_id
    assert await store.tasks.create(task_id, spec, ACTIVE, next_ms) is None
    return task_id


async def manual_run(store: Store, task_id: str) -> str:
    """A pending manual execution of the task, ready now (as RunTask writes it)."""
    now = await store.now_ms()
    record = pb.Execution(
        id=execution_id(task_id, now, secrets.token_hex(2)),
        task_id=task_id,
        attempt=1,
        status=S.EXECUTION_STATUS_PENDING,
        trigger=pb.ExecutionTrigger.EXECUTION_TRIGGER_MANUAL,
    )
    record.nominal_time.CopyFrom(ms_to_ts(now))
    assert await store.executions.create(record, ready_at_ms=now)
    return record.id


def succeeded(exec_id: str) -> ipb.WorkResult:
    now = int(time.time() * 1000)
    result = ipb.WorkResult(
        execution_id=exec_id, lease_token=1, status=S.EXECUTION_STATUS_SUCCEEDED, executor_id="x"
    )
    result.start_time.CopyFrom(ms_to_ts(now - 5))
    result.finish_time.CopyFrom(ms_to_ts(now))
    return result


class OnePartitionPerScript:
    """Wraps every script of a store: records each call (name, the partitions of its keys) and
    fails a call whose keys span partitions (Redis Cluster would refuse it)."""

    def __init__(self, store: Store) -> None:
        self.calls: list[tuple[str, str]] = []
        scripts = store.engine.scripts
        for name, script in list(vars(scripts).items()):
            setattr(scripts, name, self._wrap(name, script))

    def _wrap(self, name: str, script: Any) -> Any:
        async def call(keys: Sequence[str] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
            tags = {re.fullmatch(r"[^{]*\{(\d+)\}.*", key).group(1) for key in keys}  # type: ignore[union-attr]
            assert len(tags) == 1, (name, keys)
            self.calls.append((name, tags.pop()))
            return await script(keys=keys, args=args, client=client)

        return call

    def partitions(self, name: str) -> list[str]:
        return sorted(p for n, p in self.calls if n == name)


class FakeLink:
    """An executor stream holding `credits`: what the dispatcher pushes is kept in `pushed`."""

    def __init__(self, credits: int) -> None:
        self.credits = credits
        self.capabilities: frozenset[str] = frozenset()
        self.connected = True
        self.last_demand = -1
        self.pushed: list[DispatchItem] = []

    def push(self, batch: list[DispatchItem], waiting: int) -> None:
        self.credits -= len(batch)
        self.pushed += batch
        self.last_demand = waiting


class FakeLinks:
    def __init__(self, link: FakeLink) -> None:
        self.link = link

    def subscribe(self, on_response: Any) -> None:
        pass

    def connected(self) -> list[FakeLink]:
        return [self.link]


def status_in(rds: redis.Redis, p: int, exec_id: str) -> int | None:
    value = rds.hget(PARTS.all[p].execution(exec_id), "status")
    return None if value is None else int(value)


def assert_queues_empty(rds: redis.Redis) -> None:
    for k in PARTS.all:
        assert rds.zcard(k.ready) == rds.zcard(k.inflight) == rds.zcard(k.ready_command) == 0, k.partition


# --- in-process: one dispatcher, credits shared among partitions, results in each --------------


def test_dispatch_shares_credits_among_partitions_and_records_each_in_its_own(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    settings = api_settings(redis_srv.url, partitions=P, lease_s=60.0)

    async def body(stores: Stores) -> None:
        store = stores.new(P)
        due = (await store.now_ms() // 1000 - 1) * 1000
        for p in range(P):
            for i in range(4):
                await store_task(store, p, once_spec(f"t{p}-{i}", due), due)
        # One Firer per partition fires exactly its partition's tasks.
        for engine in store.engines:
            count, _ = await Firer(engine, settings, NoExecutors()).fire_once()
            assert count == 4
        for k in PARTS.all:
            assert rds.zcard(k.ready) == 4
        spy = OnePartitionPerScript(store)
        link = FakeLink(0)
        recorder = Recorder(store, settings)
        dispatcher = Dispatcher(store, settings, recorder, cast(Any, FakeLinks(link)))
        # One credit per round among three busy partitions: each partition in turn.
        for _ in range(P):
            link.credits = 1
            assert await dispatcher.dispatch_once() > 0
        assert sorted(PARTS.of_execution(i.execution.id) for i in link.pushed) == [0, 1, 2]
        link.credits = 3  # an even share: one from each
        await dispatcher.dispatch_once()
        assert sorted(PARTS.of_execution(i.execution.id) for i in link.pushed[3:]) == [0, 1, 2]
        link.credits = 50  # more than the work: the rest of every partition
        await dispatcher.dispatch_once()
        assert len(link.pushed) == 12 and link.credits == 44
        assert all(rds.zcard(k.ready) == 0 and rds.zcard(k.inflight) == 4 for k in PARTS.all)
        # Renewals and results spanning partitions: one script per partition touched.
        spy.calls.clear()
        renewals = [ipb.LeaseRenewal(execution_id=i.execution.id, lease_token=i.token) for i in link.pushed]
        assert (await recorder.renew(renewals)).count == 12
        assert spy.partitions("dispatch_renew") == ["0", "1", "2"]
        known = {i.execution.id: i for i in link.pushed[::2]}  # the others are read back
        assert await recorder.record([succeeded(i.execution.id) for i in link.pushed], known) == 12
        assert spy.partitions("dispatch_complete") == ["0", "1", "2"]
        for item in link.pushed:
            assert (
                status_in(rds, PARTS.of_execution(item.execution.id), item.execution.id)
                == S.EXECUTION_STATUS_SUCCEEDED
            )
        assert_queues_empty(rds)

    run(redis_srv.url, body)


def test_reclaim_takes_back_expired_leases_of_every_partition(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    settings = api_settings(redis_srv.url, partitions=P, lease_s=60.0)

    async def body(stores: Stores) -> None:
        store = stores.new(P)
        runs = []
        for p in (1, 2):
            task_id = await store_task(store, p, spec_of(f"y{p}", YEARLY), None)
            runs.append(await manual_run(store, task_id))
            [leased] = await store.engines[p].lease_ready(10, 1)  # its holder dies at once
            assert leased.execution.id == runs[-1]
        await asyncio.sleep(0.01)
        spy = OnePartitionPerScript(store)
        dispatcher = Dispatcher(store, settings, Recorder(store, settings), cast(Any, FakeLinks(FakeLink(0))))
        assert await dispatcher._reclaim_once()
        assert spy.partitions("dispatch_reclaim") == ["1", "2"]  # partition 0's inflight was empty
        for p, exec_id in zip((1, 2), runs, strict=True):
            assert rds.zscore(PARTS.all[p].ready, exec_id) is not None
            assert rds.zcard(PARTS.all[p].inflight) == 0

    run(redis_srv.url, body)


def test_with_one_partition_a_round_makes_the_calls_it_always_made(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    """PARTITIONS=1 is the layout from before partitions: one script per step, partition 0."""
    settings = api_settings(redis_srv.url, lease_s=60.0)

    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id = await store_task(store, 0, spec_of("y", YEARLY), None)
        runs = [await manual_run(store, task_id) for _ in range(3)]
        spy = OnePartitionPerScript(store)
        link = FakeLink(10)
        recorder = Recorder(store, settings)
        dispatcher = Dispatcher(store, settings, recorder, cast(Any, FakeLinks(link)))
        await dispatcher.dispatch_once()
        assert sorted(i.execution.id for i in link.pushed) == sorted(runs)
        renewals = [ipb.LeaseRenewal(execution_id=i, lease_token=1) for i in runs]
        assert (await recorder.renew(renewals)).count == 3
        assert await recorder.record([succeeded(i) for i in runs]) == 3
        assert not await dispatcher._reclaim_once()
        assert spy.calls == [
            ("peek_due", "0"),
            ("dispatch_lease", "0"),
            ("dispatch_renew", "0"),
            ("dispatch_complete", "0"),
            ("peek_due", "0"),
        ]
        assert_queues_empty(rds)

    run(redis_srv.url, body)


# --- processes: schedulers and an executor with PARTITIONS=3 ------------------------------------


def test_tasks_in_every_partition_fire_exactly_once_with_two_schedulers(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    with suite(redis_srv, schedulers=2, PARTITIONS=str(P)):

        async def setup(stores: Stores) -> dict[str, int]:
            store = stores.new(P)
            at = await store.now_ms() + 1_000
            return {
                await store_task(store, p, once_spec(f"o{p}-{i}", at), at): p
                for p in range(P)
                for i in range(3)
            }

        tasks = run(redis_srv.url, setup)
        assert sorted(tasks.values()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]

        def history(task_id: str) -> list[bytes]:
            return rds.zrange(PARTS.all[tasks[task_id]].task_history(task_id), 0, -1)

        def all_ended() -> bool:
            for task_id, p in tasks.items():
                ids = history(task_id)
                if len(ids) != 1 or status_in(rds, p, ids[0].decode()) not in TERMINAL:
                    return False
            return True

        wait_for(all_ended, 15)
        for task_id, p in tasks.items():
            [exec_id] = [i.decode() for i in history(task_id)]
            record = rds.hgetall(PARTS.all[p].execution(exec_id))
            assert int(record[b"status"]) == S.EXECUTION_STATUS_SUCCEEDED
            assert int(record.get(b"tok", b"0")) == 1 and b"rc" not in record  # one lease, never taken back
            state = rds.hget(PARTS.all[p].task(task_id), "state")
            assert state is not None and int(state) == pb.TaskState.TASK_STATE_COMPLETED
            # Nothing of it anywhere but in its own partition.
            assert all(not rds.exists(k.execution(exec_id)) for k in PARTS.all if k.partition != str(p))
        assert_queues_empty(rds)


def test_manual_and_reclaimed_executions_in_other_partitions_complete(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    with suite(redis_srv, schedulers=0, PARTITIONS=str(P)) as s:

        async def setup(stores: Stores) -> dict[str, int]:
            """Before any scheduler runs: a manual run queued in partition 2, and executions whose
            holder died, leased in partitions 1 (as it fired) and 2 (by a dispatch round)."""
            store = stores.new(P)
            manual = await manual_run(store, await store_task(store, 2, spec_of("m", YEARLY), None))
            leased_manual = await manual_run(store, await store_task(store, 2, spec_of("l", YEARLY), None))
            [item] = await store.engines[2].lease_ready(10, 1, [leased_manual])
            due = (await store.now_ms() // 1000 - 1) * 1000
            await store_task(store, 1, spec_of("f", YEARLY), due)
            _, [held], _ = await store.engines[1].read_due(10)
            fired_id = execution_id(held.task_id, held.nominal_ms)
            now = await store.now_ms()
            [fired] = await store.engines[1].commit_fire([plan(held, now, 3_600_000)], now, [True], 1)
            assert fired.leased == 1 and item.token == 1
            return {manual: 2, leased_manual: 2, fired_id: 1}

        runs = run(redis_srv.url, setup)
        assert rds.zcard(PARTS.all[1].inflight) == 1 and rds.zcard(PARTS.all[2].inflight) == 1
        s.start_scheduler(PARTITIONS=str(P))

        wait_for(lambda: all(status_in(rds, p, i) in TERMINAL for i, p in runs.items()), 15)
        for exec_id, p in runs.items():
            record = rds.hgetall(PARTS.all[p].execution(exec_id))
            assert int(record[b"status"]) == S.EXECUTION_STATUS_SUCCEEDED, exec_id
        for leased in list(runs)[1:]:  # taken back once (token 2), leased again (3) and run
            record = rds.hgetall(PARTS.all[runs[leased]].execution(leased))
            assert int(record[b"tok"]) == 3 and int(record[b"rc"]) == 1, record
        assert_queues_empty(rds)
