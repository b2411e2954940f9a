"""Firing attacked directly: read, plan, compare-and-set (docs/engine.md, "Firing"), against a real
Redis. One record per occurrence and no occurrence lost, however replicas and API writes
interleave between a read and its commit; the interleavings are forced with a gate on the commit
script, not hoped for. The harness is in engine_harness.py.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from schedcore import pb
from schedcore.store import Store
from schedcore.store.engine import DueTask, FireCommit
from schedcore.store.keys import execution_id, pad_ms
from schedcore.timeutil import ms_to_ts
from services.scheduler import firing
from services.scheduler.plan import MAX_SKIPPED_RECORDS, plan
from tests.integration import helpers
from tests.integration.engine_harness import (
    ACTIVE,
    COMPLETED,
    EVERY_SECOND,
    HOUR_MS,
    HOURLY,
    PAUSED,
    NoExecutors,
    S,
    Stores,
    assert_index_consistent,
    due_api_task,
    exec_keys,
    field,
    finish,
    fire,
    fire_counted,
    gate,
    history_of,
    inflight_score,
    make_due,
    members_of,
    new_task,
    read,
    ready_score,
    reclaim,
    run,
    update,
    wait_past,
    whole_second_ago,
)
from tests.integration.helpers import KEYS, TIMEOUT, create, cron_task, get, ms_of, snapshot

# The api once per module, and a client on a flushed Redis per test (see helpers.py).
api = helpers.api
stub = helpers.stub

YEARLY = "0 0 1 1 *"  # the following occurrence is months away: a fired task is not due again


def firer(store: Store, batch_size: int = 500) -> firing.Firer:
    settings = SimpleNamespace(
        batch_size=batch_size, poll_interval_s=0.01, missed_tolerance_s=3600.0, lease_s=60.0
    )
    return firing.Firer(store.engine, cast(Any, settings), NoExecutors())


# --- 1. replicas racing on one due set: each occurrence recorded once, each task advanced once ------


def _concurrent_fire(url: str, rds: Any, replicas: int) -> None:
    async def body(stores: Stores) -> None:
        setup = stores.new()
        due = await whole_second_ago(setup, 5)
        task_ids = {await new_task(setup, due, f"t{i:03d}") for i in range(200)}
        replicas_ = [stores.new() for _ in range(replicas)]
        barrier = asyncio.Barrier(replicas)
        for store in replicas_:
            gate(store, "fire_commit", barrier)  # every replica has read everything before any commit

        async def one_round(store: Store) -> list[int]:
            return await fire(store, await read(store, 500))

        results = await asyncio.gather(*(one_round(s) for s in replicas_))
        created = [n for r in results for n in r]
        assert created.count(1) == 200 and created.count(-1) == 200 * (replicas - 1), Counter(created)
        for task_id in task_ids:
            assert exec_keys(rds, task_id) == [KEYS.execution(execution_id(task_id, due)).encode()]
            # advanced exactly once: twice would be two seconds on
            assert await field(setup, setup.keys.task(task_id), "next") == pad_ms(due + 1000)
        assert await setup.redis.zcard(setup.keys.ready) == 200
        await assert_index_consistent(setup)

    run(url, body)


def test_two_replicas_reading_the_same_due_tasks_record_each_occurrence_once(redis_srv, rds):
    _concurrent_fire(redis_srv.url, rds, 2)


def test_eight_replicas_reading_the_same_due_tasks_record_each_occurrence_once(redis_srv, rds):
    _concurrent_fire(redis_srv.url, rds, 8)


def test_eight_firers_draining_in_small_batches_fire_each_task_once(redis_srv, rds):
    async def body(stores: Stores) -> None:
        setup = stores.new()
        due = await whole_second_ago(setup, 5)
        task_ids = {await new_task(setup, due, f"t{i:03d}", YEARLY) for i in range(300)}
        firers = [firer(stores.new(), 17) for _ in range(8)]

        async def drain(f: firing.Firer) -> int:
            while True:
                count, _ = await f.fire_once()
                if count == 0:
                    return f.fired

        fired = await asyncio.gather(*(drain(f) for f in firers))
        assert sum(fired) == 300
        for task_id in task_ids:
            assert len(exec_keys(rds, task_id)) == 1
            assert await field(setup, setup.keys.task(task_id), "state") == str(ACTIVE)
        assert rds.zcard(KEYS.ready) == 300
        await assert_index_consistent(setup)

    run(redis_srv.url, body)


def test_a_firer_whose_commit_met_conflicts_reads_its_next_round_at_a_random_offset(redis_srv, rds):
    async def body(stores: Stores) -> None:
        setup = stores.new()
        due = await whole_second_ago(setup, 5)
        for i in range(40):
            await new_task(setup, due, f"t{i:03d}", YEARLY)
        sa, sb = stores.new(), stores.new()
        barrier = asyncio.Barrier(2)
        gate(sa, "fire_commit", barrier)  # both have read the same ten before either commits
        gate(sb, "fire_commit", barrier)
        a, b = firer(sa, 10), firer(sb, 10)
        await asyncio.gather(a.fire_once(), b.fire_once())
        # One commit took all ten, the other met ten conflicts: only that one spreads.
        assert sorted([a.fired, b.fired]) == [0, 10]
        loser = a if a.fired == 0 else b
        winner = b if loser is a else a
        assert loser.spread > 0 and winner.spread == 0

    run(redis_srv.url, body)


def test_read_due_with_a_spread_starts_that_far_into_the_due_entries(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        base = await whole_second_ago(store, 200)
        ids = [await new_task(store, base + i, f"t{i:03d}") for i in range(110)]  # oldest first
        assert [t.task_id for t in await read(store, 10)] == ids[:10]
        _, spread, _ = await store.engine.read_due(10, 0.5)
        assert [t.task_id for t in spread] == ids[50:60]  # floor(0.5 * (110 - 10))
        _, last, _ = await store.engine.read_due(10, 0.9999)
        assert [t.task_id for t in last] == ids[99:109]
        _, few, _ = await store.engine.read_due(500, 0.7)  # fewer due than the limit: all of them
        assert [t.task_id for t in few] == ids

    run(redis_srv.url, body)


# --- 2. nothing is held between read and commit -----------------------------------------------------


def test_a_read_changes_nothing_and_a_replica_that_died_after_it_holds_nothing_back(redis_srv, rds):
    async def body(stores: Stores) -> None:
        a, b = stores.new(), stores.new()
        nominal = await whole_second_ago(a, 2)
        task_id = await new_task(a, nominal)
        before = snapshot(rds)
        [first] = await read(a)
        assert (first.task_id, first.nominal_ms) == (task_id, nominal)
        assert snapshot(rds) == before, "reading for firing wrote to Redis"
        # `a` dies here. Another replica's very next round takes the same occurrence: no lease to wait for.
        [second] = await read(b)
        assert (second.task_id, second.nominal_ms, second.srev) == (task_id, nominal, first.srev)
        assert await fire(b, [second]) == [1]
        eid = execution_id(task_id, nominal)
        assert exec_keys(rds, task_id) == [KEYS.execution(eid).encode()]
        assert history_of(rds, task_id) == ([eid.encode()], [f"{pad_ms(nominal)}:{eid}".encode()])
        assert await ready_score(b, eid) is not None
        nxt = pad_ms(nominal + 1000)
        assert await field(b, b.keys.task(task_id), "next") == nxt
        assert await members_of(b, task_id) == [f"{nxt}:{task_id}"]

    run(redis_srv.url, body)


# --- 3. fire_commit: compare-and-set, records created only if absent ---------------------------------


def test_a_commit_after_another_replica_fired_the_occurrence_changes_nothing(redis_srv, rds):
    async def body(stores: Stores) -> None:
        a, b = stores.new(), stores.new()
        nominal = await whole_second_ago(a, 1)
        task_id = await new_task(a, nominal)
        [held_a], [held_b] = await read(a), await read(b)
        assert await fire(b, [held_b]) == [1]

        before = snapshot(rds)
        assert await fire(a, [held_a]) == [-1]
        assert snapshot(rds) == before, "a commit of an occurrence fired meanwhile changed Redis"
        # The same commit replayed: nothing either.
        assert await fire(b, [held_b]) == [-1]
        assert snapshot(rds) == before
        assert exec_keys(rds, task_id) == [KEYS.execution(execution_id(task_id, nominal)).encode()]

    run(redis_srv.url, body)


def test_records_that_exist_already_are_not_written_again_and_last_does_not_regress(redis_srv, stub, rds):
    """A task whose `next` is back at an occurrence already recorded (a version that recorded an
    occurrence without advancing the task left it so): the commit creates nothing, advances the
    task, and the task's last summary stays the finished run's."""

    async def body(stores: Stores) -> None:
        store = stores.new()
        created, held = await due_api_task(stub, store, "last")
        assert await fire(store, [held]) == [1]
        eid = execution_id(created.id, held.nominal_ms)
        [item] = await store.engine.lease_ready(10, 60_000)
        assert await finish(store, eid, item.token) == 1
        assert get(stub, created.id).last_execution.status == S.EXECUTION_STATUS_SUCCEEDED

        await make_due(store, created.id, held.nominal_ms)
        [again] = await read(store)
        assert await fire(store, [again]) == [0]
        assert exec_keys(rds, created.id) == [KEYS.execution(eid).encode()]
        got = stub.GetExecution(pb.GetExecutionRequest(id=eid), timeout=TIMEOUT).execution
        assert got.status == S.EXECUTION_STATUS_SUCCEEDED
        last = get(stub, created.id).last_execution
        assert (last.execution_id, last.status) == (eid, got.status), "last regressed to the re-commit's"
        assert await field(store, store.keys.task(created.id), "next") == pad_ms(held.nominal_ms + 1000)

    run(redis_srv.url, body)


# --- 4. paused, rescheduled or renamed between read and commit ----------------------------------------


def test_pause_through_api_between_read_and_commit_wins_and_nothing_fires(redis_srv, stub, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        created, held = await due_api_task(stub, store, "p")
        paused = stub.PauseTask(pb.PauseTaskRequest(id=created.id), timeout=TIMEOUT).task
        assert paused.state == PAUSED
        before = snapshot(rds)
        assert await fire(store, [held]) == [-1]
        assert snapshot(rds) == before
        assert exec_keys(rds, created.id) == []
        key = store.keys.task(created.id)
        assert await field(store, key, "state") == str(PAUSED)
        assert await field(store, key, "next") is None
        assert await members_of(store, created.id) == [f"~:{created.id}"]
        now_task = get(stub, created.id)
        assert now_task.state == PAUSED and now_task.etag == paused.etag

    run(redis_srv.url, body)


def test_pause_through_store_write_between_read_and_commit(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id = await new_task(store, await whole_second_ago(store, 1))
        [held] = await read(store)
        await store.tasks.write(task_id, None, state=PAUSED, next_ms=None)
        assert await fire(store, [held]) == [-1]
        assert exec_keys(rds, task_id) == []
        stored = await store.tasks.get(task_id)
        assert (stored.state, stored.next_ms) == (PAUSED, None)
        await assert_index_consistent(store)

    run(redis_srv.url, body)


def test_a_state_write_that_keeps_next_still_wins_over_a_commit_read_before_it(redis_srv, rds):
    """srev is compared as well as next: an API write of the state alone (next unchanged) between
    read and commit makes the commit a conflict; the following round fires from what the API set."""

    async def body(stores: Stores) -> None:
        store = stores.new()
        nominal = await whole_second_ago(store, 1)
        task_id = await new_task(store, nominal)
        [held] = await read(store)
        await store.tasks.write(task_id, None, state=ACTIVE)
        assert await fire(store, [held]) == [-1]
        [again] = await read(store)
        assert again.nominal_ms == nominal and again.srev != held.srev
        assert await fire(store, [again]) == [1]

    run(redis_srv.url, body)


def test_reschedule_through_api_between_read_and_commit_keeps_the_new_schedule(redis_srv, stub, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        created, held = await due_api_task(stub, store, "r")
        change = pb.Task(id=created.id, schedule=pb.Schedule(cron=pb.CronSchedule(expression=HOURLY)))
        updated = update(stub, change, "schedule")
        new_next = ms_of(updated.next_run_time)
        assert await fire(store, [held]) == [-1]
        assert exec_keys(rds, created.id) == []
        key = store.keys.task(created.id)
        assert await field(store, key, "next") == pad_ms(new_next), "the commit overwrote the new schedule"
        assert await members_of(store, created.id) == [f"{pad_ms(new_next)}:{created.id}"]
        again = get(stub, created.id)
        assert ms_of(again.next_run_time) == new_next and again.etag == updated.etag

    run(redis_srv.url, body)


def test_a_rename_between_read_and_commit_does_not_hold_the_schedule_back(redis_srv, stub, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        created, held = await due_api_task(stub, store, "renamed")
        update(stub, pb.Task(id=created.id, description="a new description"), "description")
        assert await fire(store, [held]) == [1]
        following = pad_ms(held.nominal_ms + 1000)
        assert await field(store, store.keys.task(created.id), "next") == following
        assert await members_of(store, created.id) == [f"{following}:{created.id}"]

    run(redis_srv.url, body)


# --- 5. deleted tasks ------------------------------------------------------------------------------


def test_read_due_skips_tasks_deleted_before_or_after_the_peek(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        due = await whole_second_ago(store, 1)
        gone, racing, kept = [await new_task(store, due, n) for n in ("gone", "racing", "kept")]
        await store.tasks.delete(gone, None)
        scripts = store.engine.scripts
        original = scripts.fire_read

        async def delete_first(keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
            assert racing in args
            await store.tasks.delete(racing, None)
            return await original(keys=keys, args=args, client=client)

        scripts.fire_read = delete_first  # type: ignore[method-assign]
        assert [t.task_id for t in await read(store)] == [kept]

    run(redis_srv.url, body)


def test_a_task_deleted_between_read_and_commit_is_not_recreated(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id = await new_task(store, await whole_second_ago(store, 1))
        [held] = await read(store)
        await store.tasks.delete(task_id, None)
        before = snapshot(rds)
        assert await fire(store, [held]) == [-1]
        assert snapshot(rds) == before
        assert await store.redis.exists(store.keys.task(task_id)) == 0
        assert await members_of(store, task_id) == [] and exec_keys(rds, task_id) == []

    run(redis_srv.url, body)


# --- 6. a task that cannot be planned is set aside, the rest fire ------------------------------------


def test_a_task_that_cannot_be_planned_is_set_aside_and_the_tasks_behind_it_fire(
    redis_srv, rds, monkeypatch: pytest.MonkeyPatch
):
    async def body(stores: Stores) -> None:
        store = stores.new()
        due = await whole_second_ago(store, 5)
        broken = await new_task(store, due - 1, "broken", YEARLY)  # oldest: first in every read
        others = [await new_task(store, due, f"t{i}", YEARLY) for i in range(3)]
        real_plan = firing.plan

        def plan_or_fail(task: DueTask, now_ms: int, tolerance_ms: int) -> FireCommit:
            if task.task_id == broken:
                raise RuntimeError("a bug in planning")
            return real_plan(task, now_ms, tolerance_ms)

        monkeypatch.setattr(firing, "plan", plan_or_fail)
        f = firer(store, 2)
        rounds = 0
        while (await f.fire_once())[0]:
            rounds += 1
        assert rounds == 2, "the broken task was read again before its time"
        assert f.fired == 3
        for task_id in others:
            assert len(exec_keys(rds, task_id)) == 1
        now = await store.now_ms()
        [member] = await members_of(store, broken)
        assert now < int(member.split(":")[0]) <= now + firing.PLAN_RETRY_MS, "not set aside"
        assert await field(store, store.keys.task(broken), "next") == pad_ms(due - 1), "next moved"
        assert exec_keys(rds, broken) == []
        await assert_index_consistent(store)

    run(redis_srv.url, body)


# --- 7. the api's index writes and the engine's commits -------------------------------------------


def test_api_writes_on_tasks_read_for_firing_leave_exactly_one_index_member(redis_srv, stub, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        made = {n: create(stub, cron_task(n, EVERY_SECOND)) for n in ("gone", "moved", "renamed", "paused")}
        nominal = await whole_second_ago(store, 1)
        for t in made.values():
            await make_due(store, t.id, nominal)
        due = await read(store)
        assert {t.task_id for t in due} == {t.id for t in made.values()}

        gone, moved, renamed, paused = made["gone"], made["moved"], made["renamed"], made["paused"]
        stub.DeleteTask(pb.DeleteTaskRequest(id=gone.id), timeout=TIMEOUT)
        change = pb.Task(id=moved.id, schedule=pb.Schedule(cron=pb.CronSchedule(expression=HOURLY)))
        moved_next = ms_of(update(stub, change, "schedule").next_run_time)
        update(stub, pb.Task(id=renamed.id, description="new"), "description")
        stub.PauseTask(pb.PauseTaskRequest(id=paused.id), timeout=TIMEOUT)
        await assert_index_consistent(store)

        results = dict(zip([t.task_id for t in due], await fire(store, due), strict=True))
        assert results == {gone.id: -1, moved.id: -1, renamed.id: 1, paused.id: -1}
        assert await store.redis.exists(store.keys.task(gone.id)) == 0
        assert await members_of(store, gone.id) == []
        assert await members_of(store, moved.id) == [f"{pad_ms(moved_next)}:{moved.id}"]
        assert await members_of(store, renamed.id) == [f"{pad_ms(nominal + 1000)}:{renamed.id}"]
        assert await members_of(store, paused.id) == [f"~:{paused.id}"]
        await assert_index_consistent(store)

        resumed = stub.ResumeTask(pb.ResumeTaskRequest(id=paused.id), timeout=TIMEOUT).task
        assert await members_of(store, paused.id) == [f"{pad_ms(ms_of(resumed.next_run_time))}:{paused.id}"]
        stub.DeleteTask(pb.DeleteTaskRequest(id=renamed.id), timeout=TIMEOUT)
        assert await members_of(store, renamed.id) == []
        await assert_index_consistent(store)
        assert await store.redis.zcard(store.keys.by_next) == 2

    run(redis_srv.url, body)


def test_tasks_left_with_a_lease_by_an_earlier_version_fire_and_their_old_member_goes(redis_srv, rds):
    """An earlier version moved a task's index member to its lease expiry (`nx`, `lease`, `ltok`)
    while it fired: that entry comes due at the expiry, and the commit removes it."""

    async def body(stores: Stores) -> None:
        store = stores.new()
        nominal = await whole_second_ago(store, 3)
        task_id = await new_task(store, nominal)
        expiry = nominal + 1000  # already past
        old, member = f"{pad_ms(nominal)}:{task_id}", f"{pad_ms(expiry)}:{task_id}"
        await store.redis.zrem(store.keys.by_next, old)
        await store.redis.zadd(store.keys.by_next, {member: 0})
        await store.redis.hset(store.keys.task(task_id), mapping={"nx": member, "lease": expiry, "ltok": 3})
        [held] = await read(store)
        assert held.nominal_ms == nominal
        assert await fire(store, [held]) == [1]
        assert await members_of(store, task_id) == [f"{pad_ms(nominal + 1000)}:{task_id}"]
        await assert_index_consistent(store)

    run(redis_srv.url, body)


# --- 8. plan(): the missed-time policy -----------------------------------------------------------


def _due(task_id: str, nominal: int, schedule: pb.Schedule) -> DueTask:
    spec = pb.Task(id=task_id, name="m", schedule=schedule, target=pb.Target(log=pb.LogTarget()))
    return DueTask(task_id=task_id, nominal_ms=nominal, spec=spec, srev="1")


def _assert_missed(commit: FireCommit, nominal: int, now: int) -> list[pb.Execution]:
    run_, *skipped = commit.records
    assert run_.id == execution_id(commit.task.task_id, nominal)
    assert run_.status == S.EXECUTION_STATUS_PENDING and run_.attempt == 1
    assert all(r.status == S.EXECUTION_STATUS_SKIPPED for r in skipped)
    assert all("missed" in r.status_message for r in skipped)
    times = [ms_of(r.nominal_time) for r in skipped]
    assert times == [nominal + 1000 * (i + 1) for i in range(len(times))], "not the following occurrences"
    assert all(t <= now for t in times)
    assert commit.next_ms == (now // 1000 + 1) * 1000, "the task does not continue after now"
    assert commit.state == ACTIVE
    return skipped


def test_plan_missed_window_runs_the_first_and_skips_the_rest_up_to_now(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        nominal = await whole_second_ago(store, 10)
        task_id = await new_task(store, nominal)
        now, [held], _ = await store.engine.read_due(10)
        commit = plan(held, now, 1000)
        skipped = _assert_missed(commit, nominal, now)
        assert len(skipped) == (now - nominal) // 1000 >= 10

        # Committed: every record in the history, only the one that runs in the ready queue.
        [fired] = await store.engine.commit_fire([commit], now)
        assert (fired.created, fired.queued) == (len(commit.records), 1)
        assert len(exec_keys(rds, task_id)) == len(commit.records)
        assert rds.zrange(KEYS.ready, 0, -1) == [commit.records[0].id.encode()]
        for r in skipped:
            assert await field(store, store.keys.execution(r.id), "status") == str(S.EXECUTION_STATUS_SKIPPED)
        assert await field(store, store.keys.task(task_id), "next") == pad_ms(commit.next_ms or 0)
        # Skipped occurrences are born ended: they count in this minute's stats, the pending one not.
        stats = await field(store, store.keys.minute_stats(now // 60_000), f"s{S.EXECUTION_STATUS_SKIPPED}")
        assert stats == str(len(skipped))
        assert (
            await field(store, store.keys.minute_stats(now // 60_000), f"s{S.EXECUTION_STATUS_PENDING}")
            is None
        )

    run(redis_srv.url, body)


def test_plan_long_outage_records_at_most_100_skipped():
    now = 1_700_000_000_500
    nominal = (now // 1000) * 1000 - HOUR_MS
    every_second = pb.Schedule(cron=pb.CronSchedule(expression=EVERY_SECOND))
    commit = plan(_due("0123456789abcdef", nominal, every_second), now, 1000)
    skipped = _assert_missed(commit, nominal, now)
    assert len(skipped) == MAX_SKIPPED_RECORDS == 100
    assert len({r.id for r in commit.records}) == len(commit.records)


def test_plan_within_tolerance_fires_one_record_and_moves_to_the_next_occurrence():
    nominal = 1_700_000_000_000
    every_second = pb.Schedule(cron=pb.CronSchedule(expression=EVERY_SECOND))
    commit = plan(_due("0123456789abcdef", nominal, every_second), nominal + 900, 1000)
    assert [r.status for r in commit.records] == [S.EXECUTION_STATUS_PENDING]
    assert commit.next_ms == nominal + 1000 and commit.state == ACTIVE


def test_plan_one_time_task_fires_one_record_and_completes(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        now = await store.now_ms()
        for late_ms in (200, HOUR_MS):  # on time, and long after (missed)
            nominal = now - late_ms
            once = pb.Schedule(once=pb.OneTimeSchedule(run_time=ms_to_ts(nominal)))
            commit = plan(_due("0123456789abcdef", nominal, once), now, 1000)
            assert [(r.id, r.status) for r in commit.records] == [
                (execution_id("0123456789abcdef", nominal), S.EXECUTION_STATUS_PENDING)
            ]
            assert commit.next_ms is None and commit.state == COMPLETED

        # And committed: the task is completed, with no next run.
        task_id = secrets.token_hex(8)
        nominal = now - 500
        spec = pb.Task(
            id=task_id,
            name="once",
            schedule=pb.Schedule(once=pb.OneTimeSchedule(run_time=ms_to_ts(nominal))),
            target=pb.Target(log=pb.LogTarget()),
        )
        await store.tasks.create(task_id, spec, ACTIVE, nominal)
        [fired] = await fire_counted(store, await read(store), 1000)
        assert (fired.created, fired.queued) == (1, 1)
        stored = await store.tasks.get(task_id)
        assert (stored.state, stored.next_ms) == (COMPLETED, None)
        assert await members_of(store, task_id) == [f"~:{task_id}"]
        assert await field(store, store.keys.task(task_id), "next") is None

    run(redis_srv.url, body)


def test_a_round_larger_than_one_chunk_fires_each_task_once(redis_srv, rds) -> None:
    """1,200 tasks in one commit: the index, ready and history writes go out in several chunks
    (prelude.lua, `gather`), and every task still advances once with one record queued."""

    async def body(stores: Stores) -> None:
        store = stores.new()
        nominal = await whole_second_ago(store)
        ids = [await new_task(store, nominal, f"t{i}", YEARLY) for i in range(1_200)]
        fired, _ = await firer(store, batch_size=1_500).fire_once()
        assert fired == 1_200
        ready = {m.decode() for m in await store.redis.zrange(store.keys.ready, 0, -1)}
        assert ready == {execution_id(t, nominal) for t in ids}
        assert await store.redis.zcard(store.keys.history) == 1_200
        await assert_index_consistent(store)
        assert await read(store, 2_000) == []  # each advanced past its occurrence

    run(redis_srv.url, body)


# --- leased as it fires (docs/engine.md, "Leased as it fires") --------------------------------------


def test_a_run_leased_as_it_fires_is_running_in_inflight_with_token_1_and_never_ready(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        nominal = await whole_second_ago(store, 1)
        leased_id, queued_id = await new_task(store, nominal, "a"), await new_task(store, nominal, "b")
        now, due, _ = await store.engine.read_due(10)
        commits = [plan(t, now, HOUR_MS) for t in sorted(due, key=lambda t: t.task_id != leased_id)]
        fired = await store.engine.commit_fire(commits, now, [True], 60_000)
        assert [(f.created, f.queued, f.leased) for f in fired] == [(1, 1, 1), (1, 1, 0)]
        run_id, other_id = execution_id(leased_id, nominal), execution_id(queued_id, nominal)
        key = store.keys.execution(run_id)
        assert await field(store, key, "status") == str(S.EXECUTION_STATUS_RUNNING)
        assert await field(store, key, "tok") == "1"
        expiry = await inflight_score(store, run_id)
        assert expiry is not None and now + 55_000 <= expiry <= now + 65_000
        assert await ready_score(store, run_id) is None
        # the unflagged commit takes the ready path, as before
        assert (
            await ready_score(store, other_id) is not None and await inflight_score(store, other_id) is None
        )
        # a dispatch round never sees the leased one; its result is fenced by token 1
        assert [i.execution.id for i in await store.engine.lease_ready(10, 60_000)] == [other_id]
        assert await finish(store, run_id, 2) == 0
        assert await finish(store, run_id, 1) == 1
        assert await field(store, key, "status") == str(S.EXECUTION_STATUS_SUCCEEDED)
        assert await inflight_score(store, run_id) is None

    run(redis_srv.url, body)


def test_a_commit_that_conflicts_leases_nothing_even_when_flagged(redis_srv, rds):
    async def body(stores: Stores) -> None:
        a, b = stores.new(), stores.new()
        nominal = await whole_second_ago(a, 1)
        task_id = await new_task(a, nominal)
        [held_a], [held_b] = await read(a), await read(b)
        now = await a.now_ms()
        [first] = await b.engine.commit_fire([plan(held_b, now, HOUR_MS)], now)  # ready path
        before = snapshot(rds)
        [second] = await a.engine.commit_fire([plan(held_a, now, HOUR_MS)], now, [True], 60_000)
        assert (first.leased, second.created, second.leased) == (0, -1, 0)
        assert snapshot(rds) == before, "a conflicting commit flagged to lease changed Redis"
        assert await inflight_score(a, execution_id(task_id, nominal)) is None

    run(redis_srv.url, body)


def test_a_flagged_commit_of_a_missed_window_leases_only_the_run(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        nominal = await whole_second_ago(store, 5)
        await new_task(store, nominal)
        now, [held], _ = await store.engine.read_due(10)
        commit = plan(held, now, 1000)
        [fired] = await store.engine.commit_fire([commit], now, [True], 60_000)
        assert (fired.created, fired.queued, fired.leased) == (len(commit.records), 1, 1)
        assert [m.decode() for m in rds.zrange(KEYS.inflight, 0, -1)] == [commit.records[0].id]
        assert rds.zcard(KEYS.ready) == 0
        for r in commit.records[1:]:
            assert await field(store, store.keys.execution(r.id), "status") == str(S.EXECUTION_STATUS_SKIPPED)

    run(redis_srv.url, body)


def test_a_run_leased_as_it_fired_whose_scheduler_died_is_reclaimed_and_runs(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        nominal = await whole_second_ago(store, 1)
        task_id = await new_task(store, nominal)
        now, [held], _ = await store.engine.read_due(10)
        await store.engine.commit_fire([plan(held, now, HOUR_MS)], now, [True], 200)
        run_id = execution_id(task_id, nominal)
        # nobody pushed it (the scheduler died after its commit): the lease expires, reclaim takes it back
        await wait_past(store, int(await inflight_score(store, run_id) or 0))
        assert await reclaim(store) == [run_id]
        [item] = await store.engine.lease_ready(10, 60_000)
        assert (item.execution.id, item.token) == (run_id, 3)  # 1 at fire, 2 at reclaim, 3 now
        assert await finish(store, run_id, 1) == 0, "the dead holder's token still counted"
        assert await finish(store, run_id, item.token) == 1

    run(redis_srv.url, body)
