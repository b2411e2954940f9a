"""Overlap policies and cancellation in the engine's scripts, against a real redis-server
(docs/engine.md, "Overlap" and "Cancel"): each decision is taken in fire_commit.lua against the
task's active executions, a buffered run starts when an active one ends, and a cancelled running
execution ends CANCELLED only through its executor (or its lease running out)."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from schedcore import ipb, pb
from schedcore.errors import FailedPrecondition
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.keys import execution_id
from schedcore.timeutil import ms_to_ts
from services.scheduler.plan import plan
from services.scheduler.results import Recorder, apply
from tests.integration.engine_harness import (
    ACTIVE,
    LOSSES,
    Stores,
    field,
    finish,
    inflight_score,
    read,
    ready_score,
    run,
    spec_of,
    whole_second_ago,
)
from tests.support import RedisServer

S = pb.ExecutionStatus
OV = pb.OverlapPolicy


async def overlap_task(
    store: Store, policy: int, max_concurrent: int = 0, attempts: int = 1
) -> tuple[str, int]:
    """An every-second task whose occurrences from 20 s ago are due, with this overlap rule."""
    task_id = secrets.token_hex(8)
    spec = spec_of("overlap")
    spec.id = task_id
    spec.retry_policy.max_attempts = attempts
    spec.retry_policy.initial_backoff.FromMilliseconds(1)
    spec.overlap.CopyFrom(pb.Overlap(policy=policy, max_concurrent=max_concurrent))  # type: ignore[arg-type]
    first = await whole_second_ago(store, 20)
    assert await store.tasks.create(task_id, spec, ACTIVE, first) is None
    return task_id, first


async def fire_next(store: Store, lease: bool = False) -> str:
    """Fire the task's next occurrence (the only due task): the id of its record."""
    [due] = await read(store)
    now = await store.now_ms()
    commit = plan(due, now, 3_600_000)
    [fired] = await store.engine.commit_fire([commit], now, [lease], 60_000)
    assert fired.created == 1
    return commit.records[0].id


async def record(store: Store, eid: str) -> pb.Execution:
    return await store.executions.get(eid)


async def lease_all(store: Store) -> dict[str, int]:
    return {i.execution.id: i.token for i in await store.engine.lease_ready(100, 60_000)}


async def report(store: Store, eid: str, token: int, status: int) -> int:
    """An executor's result for (eid, token), recorded as the scheduler does."""
    [(rec, spec)] = await store.engine.records([eid])
    assert rec is not None
    now = await store.now_ms()
    result = ipb.WorkResult(
        execution_id=eid, lease_token=token, status=status, executor_id="x", retryable=True
    )  # type: ignore[arg-type]
    result.start_time.CopyFrom(ms_to_ts(now - 5))
    result.finish_time.CopyFrom(ms_to_ts(now))
    return (await store.engine.complete([apply(rec, spec, result, now)], now)).count


def test_skip_records_the_overlapping_occurrence_skipped_until_the_active_one_ends(
    redis_srv: RedisServer, rds: object
) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id, _ = await overlap_task(store, OV.OVERLAP_POLICY_SKIP)
        first = await fire_next(store)
        second = await fire_next(store)
        skipped = await record(store, second)
        assert skipped.status == S.EXECUTION_STATUS_SKIPPED
        assert skipped.status_message == f"overlap: {first} still active (max_concurrent 1)"
        assert skipped.attempt == 0 and skipped.HasField("finish_time")
        assert await ready_score(store, second) is None
        last = (await store.tasks.get(task_id)).to_proto().last_execution
        assert last.execution_id == second and last.status == S.EXECUTION_STATUS_SKIPPED
        # The first ends: the next occurrence runs.
        tokens = await lease_all(store)
        assert await finish(store, first, tokens[first]) == 1
        third = await fire_next(store)
        assert (await record(store, third)).status == S.EXECUTION_STATUS_PENDING
        assert await ready_score(store, third) is not None

    run(redis_srv.url, body)


def test_allow_with_a_limit_runs_that_many_and_skips_the_rest(redis_srv: RedisServer, rds: object) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        await overlap_task(store, OV.OVERLAP_POLICY_ALLOW, max_concurrent=2)
        ids = [await fire_next(store) for _ in range(4)]
        statuses = [(await record(store, i)).status for i in ids]
        assert statuses == [S.EXECUTION_STATUS_PENDING] * 2 + [S.EXECUTION_STATUS_SKIPPED] * 2

    run(redis_srv.url, body)


def test_buffer_one_holds_one_run_back_and_starts_it_when_the_active_one_ends(
    redis_srv: RedisServer, rds: object
) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id, _ = await overlap_task(store, OV.OVERLAP_POLICY_BUFFER_ONE)
        first = await fire_next(store, lease=True)  # running
        second = await fire_next(store)
        third = await fire_next(store)
        held = await record(store, second)
        assert held.status == S.EXECUTION_STATUS_PENDING
        assert "BUFFER_ONE" in held.status_message and first in held.status_message
        assert await ready_score(store, second) is None  # in no queue: in the task's buffer
        assert (await field(store, store.keys.task(task_id), "buf") or "").endswith(":" + second)
        dropped = await record(store, third)
        assert dropped.status == S.EXECUTION_STATUS_SKIPPED
        assert dropped.status_message.endswith(f"; {second} waits already")
        # The running one ends (for good): the buffered one is queued at once.
        assert await finish(store, first, 1, S.EXECUTION_STATUS_FAILED) == 1
        assert await ready_score(store, second) is not None
        assert await field(store, store.keys.task(task_id), "buf") is None
        assert await store.redis.smembers(store.keys.task_active(task_id)) == {second.encode()}

    run(redis_srv.url, body)


def test_a_retry_keeps_its_place_and_the_buffered_run_waits_for_the_final_end(
    redis_srv: RedisServer, rds: object
) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        await overlap_task(store, OV.OVERLAP_POLICY_BUFFER_ONE, attempts=2)
        first = await fire_next(store, lease=True)
        second = await fire_next(store)
        assert await report(store, first, 1, S.EXECUTION_STATUS_FAILED) == 1  # retried: still active
        assert (await record(store, first)).status == S.EXECUTION_STATUS_PENDING
        assert await ready_score(store, second) is None

    run(redis_srv.url, body)


def test_cancel_other_cancels_a_pending_run_at_once_and_the_new_one_runs(
    redis_srv: RedisServer, rds: object
) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id, _ = await overlap_task(store, OV.OVERLAP_POLICY_CANCEL_OTHER)
        first = await fire_next(store)  # pending in ready
        second = await fire_next(store)
        gone = await record(store, first)
        assert gone.status == S.EXECUTION_STATUS_CANCELLED
        assert gone.status_message == f"cancelled: the overlap policy CANCEL_OTHER: {second} came due"
        assert await ready_score(store, first) is None
        assert (await record(store, second)).status == S.EXECUTION_STATUS_PENDING
        assert await ready_score(store, second) is not None
        assert await store.redis.smembers(store.keys.task_active(task_id)) == {second.encode()}

    run(redis_srv.url, body)


def test_cancel_other_stops_a_running_one_through_its_executor_then_starts_the_new(
    redis_srv: RedisServer, rds: object
) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        await overlap_task(store, OV.OVERLAP_POLICY_CANCEL_OTHER)
        first = await fire_next(store, lease=True)  # running, token 1
        second = await fire_next(store)
        running = await record(store, first)
        assert running.status == S.EXECUTION_STATUS_RUNNING and running.HasField("cancel_time")
        assert await ready_score(store, second) is None  # waits until the first has stopped
        # A third occurrence replaces the waiting one, which never starts.
        third = await fire_next(store)
        superseded = await record(store, second)
        assert superseded.status == S.EXECUTION_STATUS_CANCELLED
        assert superseded.status_message.endswith(f"superseded by {third}")
        # The holder learns of the cancel at its next renewal.
        renewed = await store.engine.renew([(first, 1)], 60_000)
        assert renewed.count == 1 and [c[:2] for c in renewed.cancels] == [(first, 1)]
        # The executor stops it and reports CANCELLED: recorded, and the waiting run starts.
        assert await report(store, first, 1, S.EXECUTION_STATUS_CANCELLED) == 1
        assert (await record(store, first)).status == S.EXECUTION_STATUS_CANCELLED
        assert await ready_score(store, third) is not None
        # A late result of the stopped attempt is dropped.
        assert await report(store, first, 1, S.EXECUTION_STATUS_SUCCEEDED) == 0
        assert (await record(store, first)).status == S.EXECUTION_STATUS_CANCELLED

    run(redis_srv.url, body)


def test_two_replicas_racing_on_one_occurrence_start_it_once(redis_srv: RedisServer, rds: object) -> None:
    """Both read the same occurrence; only one commit passes, and with SKIP a second
    occurrence read by both is skipped once, never run next to the first."""

    async def body(stores: Stores) -> None:
        one, two = stores.new(), stores.new()
        task_id, _ = await overlap_task(one, OV.OVERLAP_POLICY_SKIP)
        for _ in range(2):
            [a], [b] = await asyncio.gather(read(one), read(two))
            now = await one.now_ms()
            fired = await asyncio.gather(
                one.engine.commit_fire([plan(a, now, 3_600_000)], now),
                two.engine.commit_fire([plan(b, now, 3_600_000)], now),
            )
            assert sorted(f[0].created for f in fired) == [-1, 1]
        ids = [execution_id(task_id, ms) for ms in (a.nominal_ms - 1000, a.nominal_ms)]
        statuses = [(await record(one, i)).status for i in ids]
        assert statuses == [S.EXECUTION_STATUS_PENDING, S.EXECUTION_STATUS_SKIPPED]

    run(redis_srv.url, body)


def test_cancel_execution_ends_a_pending_one_and_asks_a_running_one_to_stop(
    redis_srv: RedisServer, rds: object
) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id, _ = await overlap_task(store, OV.OVERLAP_POLICY_BUFFER_ONE)
        first = await fire_next(store, lease=True)
        second = await fire_next(store)  # buffered
        now = await store.now_ms()
        # The buffered one ends at once and leaves the buffer.
        assert await store.executions.cancel(second, "by hand", now) == "cancelled"
        assert (await record(store, second)).status_message == "cancelled: by hand"
        assert await field(store, store.keys.task(task_id), "buf") is None
        # The running one is asked to stop; asking again changes nothing.
        assert await store.executions.cancel(first, "by hand", now) == "requested"
        assert await store.executions.cancel(first, "again", now) == "cancelling"
        assert await field(store, store.keys.execution(first), "cx") == "by hand"
        # Its executor is gone: the lease runs out and reclaim ends it CANCELLED, not run again.
        await store.redis.zadd(store.keys.inflight, {first: 0})
        taken = await store.engine.reclaim(10, LOSSES, 60_000)
        assert taken.queued == [] and [c[0] for c in taken.cancelled] == [first]
        await Recorder(store, Settings()).end_cancelled(taken.cancelled, await store.now_ms())
        ended = await record(store, first)
        assert ended.status == S.EXECUTION_STATUS_CANCELLED and ended.status_message == "cancelled: by hand"
        assert await inflight_score(store, first) is None
        with pytest.raises(FailedPrecondition, match="has ended"):
            await store.executions.cancel(first, "late", now)

    run(redis_srv.url, body)


def test_a_cancelled_running_execution_does_not_retry(redis_srv: RedisServer, rds: object) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        await overlap_task(store, OV.OVERLAP_POLICY_ALLOW, attempts=3)
        first = await fire_next(store, lease=True)
        assert await store.executions.cancel(first, "stop", await store.now_ms()) == "requested"
        # The attempt failed before the stop reached it: it ends CANCELLED rather than retry.
        assert await report(store, first, 1, S.EXECUTION_STATUS_FAILED) == 1
        ended = await record(store, first)
        assert ended.status == S.EXECUTION_STATUS_CANCELLED and ended.status_message == "cancelled: stop"
        assert await ready_score(store, first) is None

    run(redis_srv.url, body)


def test_deleting_a_task_queues_its_buffered_run_to_be_cancelled(redis_srv: RedisServer, rds: object) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id, _ = await overlap_task(store, OV.OVERLAP_POLICY_BUFFER_ONE)
        await fire_next(store, lease=True)
        second = await fire_next(store)
        await store.tasks.delete(task_id, None)
        assert await ready_score(store, second) is not None  # the lease path cancels it (orphan)
        assert not await store.redis.exists(store.keys.task_active(task_id))

    run(redis_srv.url, body)


def test_cancel_other_with_a_catch_up_of_several_runs_leaves_only_the_newest_queued(
    redis_srv: RedisServer, rds: object
) -> None:
    """RUN_ALL catches up three runs in one commit: each cancels the one before it (PENDING,
    created in the same script), and none of the cancelled stays in ready to be leased."""

    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id = secrets.token_hex(8)
        spec = spec_of("caught up")
        spec.id = task_id
        spec.overlap.policy = OV.OVERLAP_POLICY_CANCEL_OTHER
        spec.catch_up.policy = pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_ALL
        spec.catch_up.limit = 3
        assert await store.tasks.create(task_id, spec, ACTIVE, await whole_second_ago(store, 5)) is None
        [due] = await read(store)
        now = await store.now_ms()
        commit = plan(due, now, 1_000)  # found late: a catch-up
        runs = [r.id for r in commit.records if r.status == S.EXECUTION_STATUS_PENDING]
        assert len(runs) == 3
        await store.engine.commit_fire([commit], now)
        statuses = [(await record(store, r)).status for r in runs]
        assert statuses == [
            S.EXECUTION_STATUS_CANCELLED,
            S.EXECUTION_STATUS_CANCELLED,
            S.EXECUTION_STATUS_PENDING,
        ]
        assert [await ready_score(store, r) is not None for r in runs] == [False, False, True]
        assert [i.execution.id for i in await store.engine.lease_ready(10, 60_000)] == [runs[2]]

    run(redis_srv.url, body)
