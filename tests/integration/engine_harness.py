"""The harness of the engine's script tests (test_engine_firing.py, test_engine_store.py): stores on
separate clients inside asyncio.run, time moved by writing the task hashes and index members (due
means `next` <= Redis TIME), and a gate that forces an interleaving instead of hoping for it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import ipb, pb, redisconn
from schedcore.redisconn import StoreRedis
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.engine import DueTask, Fired
from schedcore.store.keys import execution_id, pad_ms
from schedcore.timeutil import ms_to_ts
from services.scheduler.plan import plan
from services.scheduler.results import Recorder, apply
from tests.integration.helpers import KEYS, TIMEOUT, create, cron_task

# Deliveries lost that the reclaim takes back before it ends the execution FAILED (MAX_DELIVERIES).
LOSSES = Settings().max_deliveries - 1

S = pb.ExecutionStatus
ACTIVE = pb.TaskState.TASK_STATE_ACTIVE
PAUSED = pb.TaskState.TASK_STATE_PAUSED
COMPLETED = pb.TaskState.TASK_STATE_COMPLETED
HOUR_MS = 3_600_000
EVERY_SECOND = "* * * * * *"
HOURLY = "0 0 * * * *"

R = TypeVar("R")


# --- harness -----------------------------------------------------------------------------------


class Stores:
    """Stores on separate clients (separate connection pools) to one Redis, closed at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients: list[StoreRedis] = []

    def new(self, partitions: int = 1) -> Store:
        client = redisconn.from_url(self.url)
        self.clients.append(client)
        return Store(client, partitions=partitions)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


class NoExecutors:
    """The dispatch side of a Firer with no executor linked: no credits, so nothing is leased as
    it fires (services/scheduler/firing.py, Dispatch); counts the pokes."""

    def __init__(self) -> None:
        self.pokes = 0

    def poke(self) -> None:
        self.pokes += 1

    def claim_for_fire(self, commits: Sequence[Any]) -> list[bool]:
        return [False] * len(commits)

    def unclaim(self, flags: list[bool]) -> None:
        pass

    async def deliver_fired(self, commits: Sequence[Any], fired: Sequence[Fired]) -> None:
        assert not any(f.leased for f in fired)


def run(url: str, body: Callable[[Stores], Awaitable[R]]) -> R:
    async def main() -> R:
        stores = Stores(url)
        try:
            async with asyncio.timeout(60):
                return await body(stores)
        finally:
            await stores.close()

    return asyncio.run(main())


def gate(store: Store, name: str, barrier: asyncio.Barrier) -> None:
    """Hold every call of the engine script `name` until all parties reached it (so every caller
    has peeked before any of them takes anything)."""
    scripts = store.engine.scripts
    original = getattr(scripts, name)

    async def gated(keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        await barrier.wait()
        return await original(keys=keys, args=args, client=client)

    setattr(scripts, name, gated)


def spec_of(name: str, expression: str = EVERY_SECOND) -> pb.Task:
    return cron_task(name, expression)


async def new_task(store: Store, next_ms: int, name: str = "t", expression: str = EVERY_SECOND) -> str:
    """A task stored directly (no api), its next run at next_ms."""
    task_id = secrets.token_hex(8)
    spec = spec_of(name, expression)
    spec.id = task_id
    assert await store.tasks.create(task_id, spec, ACTIVE, next_ms) is None
    return task_id


async def make_due(store: Store, task_id: str, next_ms: int) -> None:
    """Move a task's next run (hash field and index member) to next_ms, as if time had passed."""
    r, k = store.redis, store.keys
    old = await r.hget(k.task(task_id), "nx")
    member = f"{pad_ms(next_ms)}:{task_id}"
    async with r.pipeline(transaction=True) as pipe:
        if old is not None:
            pipe.zrem(k.by_next, old)
        pipe.hset(k.task(task_id), mapping={"next": pad_ms(next_ms), "nx": member})
        pipe.zadd(k.by_next, {member: 0})
        await pipe.execute()


async def whole_second_ago(store: Store, seconds: int = 1) -> int:
    now = await store.now_ms()
    return (now // 1000 - seconds) * 1000


async def members_of(store: Store, task_id: str) -> list[str]:
    """The task's members in the next-run index."""
    members = await store.redis.zrange(store.keys.by_next, 0, -1)
    return [m.decode() for m in members if m.decode().endswith(":" + task_id)]


async def field(store: Store, key: str, name: str) -> str | None:
    value = await store.redis.hget(key, name)
    return None if value is None else value.decode()


async def wait_past(store: Store, ms: int) -> None:
    """Until Redis' clock is past ms."""
    for _ in range(100):
        now = await store.now_ms()
        if now > ms:
            return
        await asyncio.sleep((ms - now + 1) / 1000)
    raise AssertionError(f"Redis' clock did not pass {ms}")


async def read(store: Store, limit: int = 10) -> list[DueTask]:
    """The due tasks a firing round reads (oldest first)."""
    _, due, _ = await store.engine.read_due(limit)
    return due


async def fire(store: Store, due: Sequence[DueTask], tolerance_ms: int = HOUR_MS) -> list[int]:
    """Plan and commit read occurrences the way the firing loop does: records created per task
    (-1: a conflict, nothing written)."""
    return [f.created for f in await fire_counted(store, due, tolerance_ms)]


async def fire_counted(store: Store, due: Sequence[DueTask], tolerance_ms: int = HOUR_MS) -> list[Fired]:
    now = await store.now_ms()
    return await store.engine.commit_fire([plan(t, now, tolerance_ms) for t in due], now)


async def due_api_task(stub: Any, store: Store, name: str) -> tuple[pb.Task, DueTask]:
    """A task created through the api, made due a second ago and read for firing."""
    created = create(stub, cron_task(name, EVERY_SECOND))
    nominal = await whole_second_ago(store, 1)
    await make_due(store, created.id, nominal)
    [held] = await read(store)
    assert held.task_id == created.id and held.nominal_ms == nominal
    return created, held


async def queue(store: Store, task_id: str, count: int) -> list[str]:
    """`count` pending executions of a task, ready now (through execution_create)."""
    now = await store.now_ms()
    ids = []
    for i in range(count):
        nominal = now - 10_000 - i
        record = pb.Execution(
            id=execution_id(task_id, nominal),
            task_id=task_id,
            attempt=1,
            status=S.EXECUTION_STATUS_PENDING,
            trigger=pb.ExecutionTrigger.EXECUTION_TRIGGER_SCHEDULE,
        )
        record.nominal_time.CopyFrom(ms_to_ts(nominal))
        assert await store.executions.create(record, ready_at_ms=now - 1)
        ids.append(record.id)
    return ids


async def finish(store: Store, exec_id: str, token: int, status: int = S.EXECUTION_STATUS_SUCCEEDED) -> int:
    """Report an attempt's end the way the scheduler's Recorder does (results.apply + complete)."""
    [(record, spec)] = await store.engine.records([exec_id])
    assert record is not None
    now = await store.now_ms()
    result = ipb.WorkResult(
        execution_id=exec_id, lease_token=token, status=status, executor_id="x", status_message="done"
    )
    result.start_time.CopyFrom(ms_to_ts(now - 5))
    result.finish_time.CopyFrom(ms_to_ts(now))
    return (await store.engine.complete([apply(record, spec, result, now)], now)).count


async def reclaim(store: Store, limit: int = 100) -> list[str]:
    """Expired leases taken back to ready (no execution here loses its holder often enough to be
    ended FAILED by the reclaim)."""
    taken = await store.engine.reclaim(limit, LOSSES, 60_000)
    assert taken.failed == [] and taken.cancelled == []
    return taken.queued


async def ready_score(store: Store, exec_id: str) -> float | None:
    return await store.redis.zscore(store.keys.ready, exec_id)


async def inflight_score(store: Store, exec_id: str) -> float | None:
    return await store.redis.zscore(store.keys.inflight, exec_id)


async def assert_index_consistent(store: Store) -> None:
    """Every idx:next member is its task's `nx`, every task has exactly its `nx` in the index."""
    members = [m.decode() for m in await store.redis.zrange(store.keys.by_next, 0, -1)]
    owners = Counter(m.rsplit(":", 1)[1] for m in members)
    assert all(n == 1 for n in owners.values()), owners
    for member in members:
        task_id = member.rsplit(":", 1)[1]
        assert await field(store, store.keys.task(task_id), "nx") == member, member


def exec_keys(rds: redis.Redis, task_id: str) -> list[bytes]:
    return rds.keys(KEYS.execution(task_id + "-*"))


def history_of(rds: redis.Redis, task_id: str) -> tuple[list[bytes], list[bytes]]:
    """(the task's history members, the global history members naming the task)."""
    mine = rds.zrange(KEYS.task_history(task_id), 0, -1)
    everything = [m for m in rds.zrange(KEYS.history, 0, -1) if task_id.encode() in m]
    return mine, everything


def update(stub: Any, task: pb.Task, *paths: str) -> pb.Task:
    return stub.UpdateTask(
        pb.UpdateTaskRequest(task=task, update_mask=FieldMask(paths=list(paths))), timeout=TIMEOUT
    ).task


async def ran(store: Store, recorder: Recorder, status: int, message: str = "") -> str:
    """Fire the (one) due task's next occurrence leased, and record `status` as its executor's
    result through the scheduler's Recorder: the execution id."""
    [due] = await read(store)
    now = await store.now_ms()
    commit = plan(due, now, 3_600_000)
    await store.engine.commit_fire([commit], now, [True], 60_000)
    eid = commit.records[0].id
    result = ipb.WorkResult(
        execution_id=eid,
        lease_token=1,
        status=status,  # type: ignore[arg-type]
        executor_id="x",
        status_message=message,
    )
    result.start_time.CopyFrom(ms_to_ts(now))
    result.finish_time.CopyFrom(ms_to_ts(now + 1))
    assert await recorder.record([result]) == 1
    return eid
