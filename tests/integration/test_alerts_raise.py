"""Raising alerts (docs/alerts.md, "Rules" and invariants 1-3), against a real redis-server through
the scheduler's own code paths: the Recorder recording results (FAILING once per incident,
RECOVERED), firing (SKIPPED once per commit, runs put under watch), the sweep (LATE,
RUNNING_LONG) and leased, fenced delivery outcomes."""

from __future__ import annotations

import secrets

import redis

from schedcore import ipb, pb
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.alerts import DELIVERED, GIVE_UP, RETRY, Outcome
from schedcore.timeutil import ms_to_ts
from services.scheduler.plan import plan
from services.scheduler.results import Recorder
from tests.integration.engine_harness import (
    ACTIVE,
    Stores,
    fire,
    make_due,
    ran,
    read,
    run,
    spec_of,
    whole_second_ago,
)
from tests.support import RedisServer

S = pb.ExecutionStatus
K = pb.AlertKind
TIMED_OUT = S.EXECUTION_STATUS_TIMED_OUT
CHANNELS = ["c1c1c1c1c1c1c1c1", "c2c2c2c2c2c2c2c2"]


async def task_with(store: Store, policy: pb.AlertPolicy, seconds_ago: int = 30, **fields: object) -> str:
    task_id = secrets.token_hex(8)
    spec = spec_of("alerting")
    spec.id = task_id
    spec.alerts.CopyFrom(policy)
    for name, value in fields.items():
        getattr(spec, name).CopyFrom(value)
    assert await store.tasks.create(task_id, spec, ACTIVE, await whole_second_ago(store, seconds_ago)) is None
    return task_id


async def said(store: Store, recorder: Recorder, status: int) -> str:
    """A run whose executor reported `status` with the message "said <status>"."""
    return await ran(store, recorder, status, f"said {status}")


async def notifications(store: Store, task_id: str) -> list[dict[str, str]]:
    """The task's notification hashes, oldest first."""
    k = store.keys
    out = []
    for nid in await store.redis.zrange(k.task_notifications(task_id), 0, -1):
        raw = await store.redis.hgetall(k.notification(nid.decode()))
        out.append({"id": nid.decode(), **{f.decode(): v.decode() for f, v in raw.items()}})
    return out


def test_failing_is_raised_once_per_incident_to_each_channel_and_recovery_closes_it(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        policy = pb.AlertPolicy(channel_ids=CHANNELS, consecutive_failures=2, recovery=True)
        task_id = await task_with(store, policy)
        recorder = Recorder(store, Settings())
        await said(store, recorder, S.EXECUTION_STATUS_FAILED)
        assert await notifications(store, task_id) == []  # one failure: below the rule
        second = await said(store, recorder, S.EXECUTION_STATUS_TIMED_OUT)
        await said(store, recorder, S.EXECUTION_STATUS_FAILED)  # the same incident: nothing more
        raised = await notifications(store, task_id)
        assert [n["id"] for n in raised] == [f"failing.{second}.{c}" for c in CHANNELS]
        for n, channel in zip(raised, CHANNELS, strict=True):
            assert n["k"] == str(K.ALERT_KIND_FAILING) and n["t"] == task_id and n["e"] == second
            assert n["c"] == channel and n["ns"] == "default" and n["st"] == "p" and n["a"] == "0"
            assert n["m"] == f"2 executions in a row ended FAILED or TIMED_OUT; the last: said {TIMED_OUT}"
        due = await store.redis.zrange(store.keys.notifications_due, 0, -1)
        assert sorted(d.decode() for d in due) == sorted(n["id"] for n in raised)

        ok = await said(store, recorder, S.EXECUTION_STATUS_SUCCEEDED)
        after = await notifications(store, task_id)
        assert [n["id"] for n in after[2:]] == [f"recovered.{ok}.{c}" for c in CHANNELS]
        assert after[2]["m"] == f"succeeded again, after the FAILING alert raised by {second}"
        await said(store, recorder, S.EXECUTION_STATUS_SUCCEEDED)  # no incident open: nothing
        for _ in range(2):
            await said(store, recorder, S.EXECUTION_STATUS_FAILED)
        assert len(await notifications(store, task_id)) == 6  # a new incident, a new FAILING

    run(redis_srv.url, body)


def test_retries_are_not_failures_and_a_task_without_channels_raises_nothing(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        rule = pb.AlertPolicy(channel_ids=CHANNELS[:1], consecutive_failures=1)
        retried = await task_with(store, rule, retry_policy=pb.RetryPolicy(max_attempts=3))
        recorder = Recorder(store, Settings())
        [due] = await read(store)
        now = await store.now_ms()
        commit = plan(due, now, 3_600_000)
        await store.engine.commit_fire([commit], now, [True], 60_000)
        eid = commit.records[0].id
        result = ipb.WorkResult(
            execution_id=eid, lease_token=1, status=S.EXECUTION_STATUS_FAILED, executor_id="x", retryable=True
        )
        result.start_time.CopyFrom(ms_to_ts(now))
        result.finish_time.CopyFrom(ms_to_ts(now + 1))
        assert await recorder.record([result]) == 1
        assert await notifications(store, retried) == []  # attempt 1 of 3 failed: a retry
        await store.tasks.delete(retried, None)  # out of the way of the next read
        silent = await task_with(store, pb.AlertPolicy(consecutive_failures=1))  # no channel
        await said(store, recorder, S.EXECUTION_STATUS_FAILED)
        assert await notifications(store, silent) == []

    run(redis_srv.url, body)


def test_skipped_occurrences_raise_one_alert_per_commit(redis_srv: RedisServer, rds: redis.Redis) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        policy = pb.AlertPolicy(channel_ids=CHANNELS[:1], skipped=True)
        catch_up = pb.CatchUp(policy=pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_LATEST)
        task_id = await task_with(store, policy, seconds_ago=3600, catch_up=catch_up)
        [due] = await read(store)
        now = await store.now_ms()
        commit = plan(due, now, 10_000)  # an hour of every-second occurrences missed
        skipped = [r.id for r in commit.records if r.status == S.EXECUTION_STATUS_SKIPPED]
        assert len(skipped) > 1
        await store.engine.commit_fire([commit], now)
        [n] = await notifications(store, task_id)
        assert n["id"] == f"skipped.{skipped[0]}.{CHANNELS[0]}" and n["k"] == str(K.ALERT_KIND_SKIPPED)
        assert n["m"].startswith(
            f"{len(skipped)} occurrence(s) recorded SKIPPED, the first {skipped[0]} (missed"
        )

        async def late_again(seconds: int) -> list[str]:
            """The task found late once more, `seconds` of occurrences missed: what it skipped
            (records not made before: each window starts earlier)."""
            await make_due(store, task_id, await whole_second_ago(store, seconds))
            [again] = await read(store)
            now = await store.now_ms()
            commit = plan(again, now, 10_000)
            await store.engine.commit_fire([commit], now)
            return [r.id for r in commit.records if r.status == S.EXECUTION_STATUS_SKIPPED]

        assert await late_again(5400) and len(await notifications(store, task_id)) == 1  # still open
        await make_due(store, task_id, await whole_second_ago(store, 7200))  # not recorded yet
        assert await fire(store, await read(store), 3 * 3_600_000) == [1]  # on time: the incident ends
        third = await late_again(9000)
        assert [n["id"] for n in await notifications(store, task_id)][1:] == [
            f"skipped.{third[0]}.{CHANNELS[0]}"
        ]

    run(redis_srv.url, body)


def test_the_sweep_raises_late_for_a_run_not_started_and_running_long_for_one_that_runs_on(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        policy = pb.AlertPolicy(channel_ids=CHANNELS[:1])
        policy.late_start.FromSeconds(5)
        policy.running_longer_than.FromSeconds(5)
        waiting = await task_with(store, policy, seconds_ago=20)
        running = await task_with(store, policy, seconds_ago=20)
        due = {d.task_id: d for d in await read(store)}
        now = await store.now_ms()
        commits = [plan(due[waiting], now, 3_600_000), plan(due[running], now, 3_600_000)]
        await store.engine.commit_fire(commits, now, [False, True], 60_000)
        late_id, long_id = commits[0].records[0].id, commits[1].records[0].id
        watch = {m.decode() for m in await store.redis.zrange(store.keys.alert_watch, 0, -1)}
        assert watch == {f"{w}:5000:{e}:default:{CHANNELS[0]}" for w in "lr" for e in (late_id, long_id)}
        # The leased run started just now: it has not run 5 s yet, and it started (not late).
        looked, raised = await store.alerts[0].sweep(100)
        assert (looked, raised) == (4, 1)
        [late] = await notifications(store, waiting)
        assert late["id"] == f"late.{late_id}.{CHANNELS[0]}" and late["k"] == str(K.ALERT_KIND_LATE)
        assert late["m"].startswith("not started 2") and late["m"].endswith("(the limit: 5 s)")
        assert await notifications(store, running) == []
        left = {m.decode() for m in await store.redis.zrange(store.keys.alert_watch, 0, -1)}
        # still watched: the waiting run for running long, the running one until its 5 s are up
        assert left == {f"r:5000:{late_id}:default:{CHANNELS[0]}", f"r:5000:{long_id}:default:{CHANNELS[0]}"}
        await store.redis.hset(store.keys.execution(long_id), "lt", now - 6000)  # it started 6 s ago
        await store.redis.zadd(store.keys.alert_watch, {f"r:5000:{long_id}:default:{CHANNELS[0]}": 0})
        assert (await store.alerts[0].sweep(100))[1] == 1
        [long] = await notifications(store, running)
        assert long["id"] == f"running_long.{long_id}.{CHANNELS[0]}"
        assert long["m"].startswith("still running 6 s after its attempt started")
        assert (await store.alerts[0].sweep(100))[1] == 0  # once

    run(redis_srv.url, body)


def test_delivery_leases_are_fenced_retried_with_their_delay_and_end_after_the_last_attempt(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        policy = pb.AlertPolicy(channel_ids=CHANNELS, consecutive_failures=1)
        task_id = await task_with(store, policy)
        await ran(store, Recorder(store, Settings()), S.EXECUTION_STATUS_FAILED)
        alerts = store.alerts[0]
        first = await alerts.lease(10, 60_000)
        assert sorted(n.channel_id for n in first) == CHANNELS and {n.attempt for n in first} == {1}
        assert await alerts.lease(10, 60_000) == []  # leased: not due again until the lease ends
        a, b = first
        # a stale token (a lease taken over) records nothing
        assert await alerts.done([Outcome(a.id, a.token + 1, DELIVERED)], 3600, 3) == 0
        assert (
            await alerts.done(
                [Outcome(a.id, a.token, DELIVERED), Outcome(b.id, b.token, RETRY, "http 503", 0)], 3600, 3
            )
            == 2
        )
        by_id = {n["id"]: n for n in await notifications(store, task_id)}
        assert by_id[a.id]["st"] == "d" and "err" not in by_id[a.id] and int(by_id[a.id]["end"]) > 0
        assert 0 < await store.redis.ttl(store.keys.notification(a.id)) <= 3600
        assert by_id[b.id]["st"] == "p" and by_id[b.id]["err"] == "http 503"
        for attempt in (2, 3):
            [again] = await alerts.lease(10, 60_000)
            assert again.id == b.id and again.attempt == attempt
            await alerts.done([Outcome(again.id, again.token, RETRY, f"http 50{attempt}", 0)], 3600, 3)
        failed = {n["id"]: n for n in await notifications(store, task_id)}[b.id]
        assert failed["st"] == "f" and failed["err"] == "http 503" and failed["a"] == "3"
        assert await store.redis.zcard(store.keys.notifications_due) == 0
        assert await alerts.lease(10, 60_000) == []
        # a channel gone ends a notification at once, whatever attempts are left
        await store.redis.hset(store.keys.notification(b.id), mapping={"st": "p", "a": 0})
        await store.redis.zadd(store.keys.notifications_due, {b.id: 0})
        [c] = await alerts.lease(10, 60_000)
        await alerts.done([Outcome(c.id, c.token, GIVE_UP, "channel deleted")], 3600, 3)
        assert (await store.redis.hget(store.keys.notification(b.id), "st")) == b"f"

    run(redis_srv.url, body)
