"""Direct dispatch (docs/engine.md, "Direct dispatch: fired straight to an executor") against a
real Redis: a direct commit creates its pending record already leased (token 1, in inflight, never
in ready); a record that existed, or a conflicting commit, leases nothing; a lease nobody reports
is reclaimed; the firing round marks only what it holds credits for (never command work) and its
reservation returns unused credits and hands back what a dead stream could not take. The burst
through real processes, counted by its metrics, is in test_metrics.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, cast

import pytest

from schedcore import ipb, pb
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.engine import DueTask, FireCommit
from schedcore.store.keys import execution_id
from schedcore.timeutil import ms_to_ts
from services.scheduler import firing
from services.scheduler.dispatch import Dispatcher
from services.scheduler.links import Link
from services.scheduler.plan import plan
from services.scheduler.results import Recorder
from tests.integration import helpers
from tests.integration.engine_harness import (
    HOUR_MS,
    S,
    Stores,
    field,
    finish,
    inflight_score,
    make_due,
    new_task,
    queue,
    read,
    ready_score,
    reclaim,
    run,
    wait_past,
    whole_second_ago,
)

api = helpers.api
stub = helpers.stub

LEASE_MS = 60_000
YEARLY = "0 0 1 1 *"  # fired once, a task is not due again within a test


async def due_now(store: Store, count: int = 1, name: str = "t") -> list[DueTask]:
    """`count` tasks due a second ago, read for firing."""
    nominal = await whole_second_ago(store)
    for i in range(count):
        task_id = await new_task(store, nominal + HOUR_MS, f"{name}{i}", YEARLY)
        await make_due(store, task_id, nominal)
    return await read(store, count)


def planned(task: DueTask, now: int, direct: bool) -> FireCommit:
    return replace(plan(task, now, HOUR_MS), direct=direct)


# --- the store: fire_commit.lua's direct mode --------------------------------------------------


def test_a_direct_commit_creates_the_pending_record_leased_with_token_1(redis_srv, rds) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        [task] = await due_now(store)
        now = await store.now_ms()
        [fired] = await store.engine.commit_fire([planned(task, now, True)], now, LEASE_MS)
        assert (fired.created, fired.queued, fired.direct) == (1, 1, True)
        exec_id = execution_id(task.task_id, task.nominal_ms)
        key = store.keys.execution(exec_id)
        assert await field(store, key, "status") == str(S.EXECUTION_STATUS_RUNNING)
        assert await field(store, key, "tok") == "1"
        assert await ready_score(store, exec_id) is None  # never in ready: nothing else leases it
        expiry = await inflight_score(store, exec_id)
        assert expiry is not None and now + LEASE_MS - 1_000 <= expiry <= now + LEASE_MS + 5_000
        # The result of the attempt sent with token 1 is recorded; a stale token is not.
        assert await finish(store, exec_id, 2) == 0
        assert await finish(store, exec_id, 1) == 1
        assert await field(store, key, "status") == str(S.EXECUTION_STATUS_SUCCEEDED)
        assert await inflight_score(store, exec_id) is None

    run(redis_srv.url, body)


def test_a_commit_not_marked_direct_queues_to_ready_as_before(redis_srv, rds) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        [task] = await due_now(store)
        now = await store.now_ms()
        [fired] = await store.engine.commit_fire([planned(task, now, False)], now, LEASE_MS)
        assert (fired.created, fired.queued, fired.direct) == (1, 1, False)
        exec_id = execution_id(task.task_id, task.nominal_ms)
        assert await field(store, store.keys.execution(exec_id), "status") == str(S.EXECUTION_STATUS_PENDING)
        assert await ready_score(store, exec_id) is not None
        assert await inflight_score(store, exec_id) is None

    run(redis_srv.url, body)


def test_a_record_that_existed_is_not_leased_by_a_direct_commit(redis_srv, rds) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        [task] = await due_now(store)
        exec_id = execution_id(task.task_id, task.nominal_ms)
        # The same occurrence already recorded (a RunTaskNow-style record with that id, queued).
        record = pb.Execution(
            id=exec_id,
            task_id=task.task_id,
            attempt=1,
            status=S.EXECUTION_STATUS_PENDING,
            trigger=pb.ExecutionTrigger.EXECUTION_TRIGGER_SCHEDULE,
        )
        record.nominal_time.CopyFrom(ms_to_ts(task.nominal_ms))
        now = await store.now_ms()
        assert await store.executions.create(record, ready_at_ms=now)
        [fired] = await store.engine.commit_fire([planned(task, now, True)], now, LEASE_MS)
        assert (fired.created, fired.direct) == (0, False)  # nothing would be sent for it
        key = store.keys.execution(exec_id)
        assert await field(store, key, "tok") is None
        assert await field(store, key, "status") == str(S.EXECUTION_STATUS_PENDING)
        assert await ready_score(store, exec_id) is not None  # still queued, for the dispatch loop
        assert await inflight_score(store, exec_id) is None

    run(redis_srv.url, body)


def test_a_conflicting_direct_commit_leases_nothing(redis_srv, rds) -> None:
    async def body(stores: Stores) -> None:
        a, b = stores.new(), stores.new()
        [task] = await due_now(a)
        now = await a.now_ms()
        [first] = await a.engine.commit_fire([planned(task, now, False)], now, LEASE_MS)
        assert first.created == 1
        # The second replica read the same occurrence; `next` moved on under it.
        [late] = await b.engine.commit_fire([planned(task, now, True)], now, LEASE_MS)
        assert (late.created, late.queued, late.direct) == (-1, 0, False)
        assert await a.redis.zcard(a.keys.inflight) == 0

    run(redis_srv.url, body)


def test_only_the_first_pending_record_of_a_commit_is_leased(redis_srv, rds) -> None:
    """A task late by several occurrences records the missed ones SKIPPED and one to run: that
    one is leased, the skipped ones are not."""

    async def body(stores: Stores) -> None:
        store = stores.new()
        nominal = await whole_second_ago(store, 5)
        task_id = await new_task(store, nominal + HOUR_MS)  # every second: five missed
        await make_due(store, task_id, nominal)
        [task] = await read(store)
        now = await store.now_ms()
        commit = replace(plan(task, now, 1_000), direct=True)  # late beyond 1 s: missed
        assert len(commit.records) >= 2
        [fired] = await store.engine.commit_fire([commit], now, LEASE_MS)
        assert fired.direct and fired.created == len(commit.records)
        statuses = [await field(store, store.keys.execution(r.id), "status") for r in commit.records]
        assert statuses.count(str(S.EXECUTION_STATUS_RUNNING)) == 1
        assert await store.redis.zcard(store.keys.inflight) == 1

    run(redis_srv.url, body)


def test_a_direct_lease_nobody_reports_is_reclaimed_to_ready(redis_srv, rds) -> None:
    """A scheduler killed between the commit and the push: the lease expires, reclaim queues the
    execution again, and the next lease fences token 1 out."""

    async def body(stores: Stores) -> None:
        store = stores.new()
        [task] = await due_now(store)
        now = await store.now_ms()
        [fired] = await store.engine.commit_fire([planned(task, now, True)], now, 50)
        assert fired.direct
        exec_id = execution_id(task.task_id, task.nominal_ms)
        await wait_past(store, int(await inflight_score(store, exec_id) or 0))
        assert await reclaim(store) == [exec_id]
        [item] = await store.engine.lease_ready(10, LEASE_MS)
        assert item.execution.id == exec_id and item.token > 1
        assert await finish(store, exec_id, 1) == 0  # the first holder's result is stale
        assert await finish(store, exec_id, item.token) == 1

    run(redis_srv.url, body)


# --- the firing round and its reservation -------------------------------------------------------


def settings(**fields: Any) -> Settings:
    return Settings(grpc_plaintext=True, lease_s=LEASE_MS / 1000, **fields)


def linked(dispatcher: Dispatcher, *credits: int) -> list[Link]:
    """Connected links (no real stream) with these credits, as the dispatcher sees them."""
    links = []
    for i, n in enumerate(credits):
        link = Link(f"127.0.0.1:{i + 1}", "s", dispatcher.on_response, cast(Any, None))
        link.connected, link.credits, link.stream = True, n, 1
        links.append(link)
    dispatcher.links.links = {link.addr: link for link in links}
    return links


def pushed(link: Link) -> list[ipb.WorkItem]:
    items = []
    while not link._queue.empty():
        request = link._queue.get_nowait()
        assert request is not None
        items.extend(request.items)
    return items


def test_the_round_fires_directly_up_to_the_credits_it_holds_and_gives_back_the_rest(redis_srv, rds) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        s = settings()
        dispatcher = Dispatcher(store, s, Recorder(store, s))
        a, b = linked(dispatcher, 2, 1)
        due = await due_now(store, 5)
        firer = firing.Firer(store.engine, s, lambda: None, dispatcher)
        fired, _ = await firer.fire_once()
        assert fired == 5
        sent = pushed(a) + pushed(b)
        assert len(pushed(a)) == 0 and len(sent) == 3  # three credits, three items, most first
        assert (a.credits, b.credits) == (0, 0)
        assert set(a.sent) | set(b.sent) == {w.execution_id for w in sent}
        assert all(w.lease_token == 1 for w in sent)
        inflight = {m.decode() for m in await store.redis.zrange(store.keys.inflight, 0, -1)}
        ready = {m.decode() for m in await store.redis.zrange(store.keys.ready, 0, -1)}
        assert inflight == {w.execution_id for w in sent}
        assert len(ready) == 2 and not ready & inflight
        assert inflight | ready == {execution_id(t.task_id, t.nominal_ms) for t in due}

    run(redis_srv.url, body)


def test_credits_left_over_go_back_to_their_stream(redis_srv, rds) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        s = settings()
        dispatcher = Dispatcher(store, s, Recorder(store, s))
        [a] = linked(dispatcher, 10)
        await due_now(store, 3)
        await firing.Firer(store.engine, s, lambda: None, dispatcher).fire_once()
        assert len(pushed(a)) == 3 and a.credits == 7

    run(redis_srv.url, body)


def test_command_work_is_not_fired_directly(redis_srv, rds) -> None:
    """Command targets are routed to executors that run them, through ready (docs/engine.md,
    "Routing"): a firing round never pushes one."""

    async def body(stores: Stores) -> None:
        store = stores.new()
        s = settings()
        dispatcher = Dispatcher(store, s, Recorder(store, s))
        [a] = linked(dispatcher, 10)
        [task] = await due_now(store)
        spec = task.spec
        spec.target.Clear()
        spec.target.command.program = "true"
        await store.redis.hset(store.keys.task(task.task_id), "spec", spec.SerializeToString())
        await firing.Firer(store.engine, s, lambda: None, dispatcher).fire_once()
        assert pushed(a) == [] and a.credits == 10
        assert await store.redis.zcard(store.keys.ready) == 1

    run(redis_srv.url, body)


def test_items_of_a_stream_that_ended_under_the_reservation_go_back_to_ready(redis_srv, rds) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        s = settings()
        dispatcher = Dispatcher(store, s, Recorder(store, s))
        [a] = linked(dispatcher, 5)
        [task] = await due_now(store)
        original = store.engine.commit_fire

        async def reconnect_meanwhile(*args: Any, **kwargs: Any) -> Any:
            out = await original(*args, **kwargs)
            a.stream += 1  # the stream ended and a new one began: the credits were the old one's
            a.credits = 4
            return out

        store.engine.commit_fire = reconnect_meanwhile  # type: ignore[method-assign]
        await firing.Firer(store.engine, s, lambda: None, dispatcher).fire_once()
        assert pushed(a) == [] and a.credits == 4  # the old stream's credits are not returned
        exec_id = execution_id(task.task_id, task.nominal_ms)
        assert await ready_score(store, exec_id) is not None
        assert await inflight_score(store, exec_id) is None
        # Handed back fenced: token 1 is spent, the next lease is token 2.
        [item] = await store.engine.lease_ready(10, LEASE_MS)
        assert item.execution.id == exec_id and item.token == 2

    run(redis_srv.url, body)


def test_a_failed_commit_returns_the_reserved_credits(redis_srv, rds) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        s = settings()
        dispatcher = Dispatcher(store, s, Recorder(store, s))
        [a] = linked(dispatcher, 5)
        await due_now(store, 2)

        async def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("redis went away")

        store.engine.commit_fire = unavailable  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await firing.Firer(store.engine, s, lambda: None, dispatcher).fire_once()
        assert a.credits == 5 and pushed(a) == []

    run(redis_srv.url, body)


def test_a_draining_dispatcher_reserves_nothing(redis_srv, rds) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        s = settings()
        dispatcher = Dispatcher(store, s, Recorder(store, s))
        [a] = linked(dispatcher, 5)
        dispatcher.stopping = True
        await due_now(store, 2)
        await firing.Firer(store.engine, s, lambda: None, dispatcher).fire_once()
        assert pushed(a) == [] and a.credits == 5
        assert await store.redis.zcard(store.keys.ready) == 2

    run(redis_srv.url, body)


def test_a_full_round_is_heard_as_demand_while_the_burst_drains(redis_srv, rds) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        s = settings(batch_size=3)
        dispatcher = Dispatcher(store, s, Recorder(store, s))
        linked(dispatcher)
        await due_now(store, 4)
        firer = firing.Firer(store.engine, s, lambda: None, dispatcher)
        await firer.fire_once()
        assert dispatcher.upcoming == 3  # a full round: more is likely due
        await firer.fire_once()
        assert dispatcher.upcoming == 0  # the last one was not full

    run(redis_srv.url, body)


def test_a_dispatch_round_holds_its_credits_across_its_awaits(redis_srv, rds) -> None:
    """A firing round reserving while a dispatch round waits on Redis gets none of the credits
    that round counted on: neither spends a credit twice, nothing is handed back."""

    async def body(stores: Stores) -> None:
        store = stores.new()
        s = settings()
        dispatcher = Dispatcher(store, s, Recorder(store, s))
        [a] = linked(dispatcher, 3)
        task_id = await new_task(store, (await store.now_ms()) + HOUR_MS)
        ids = set(await queue(store, task_id, 3))
        entered, release = asyncio.Event(), asyncio.Event()
        original = store.engine.lease_ready

        async def slow_lease(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            await release.wait()
            return await original(*args, **kwargs)

        store.engine.lease_ready = slow_lease  # type: ignore[method-assign]
        round_ = asyncio.create_task(dispatcher.dispatch_once())
        await entered.wait()
        assert dispatcher.reserve(5).total == 0  # the dispatch round holds them
        release.set()
        await round_
        assert {w.execution_id for w in pushed(a)} == ids and a.credits == 0
        assert await store.redis.zcard(store.keys.ready) == 0
        assert {m.decode() for m in await store.redis.zrange(store.keys.inflight, 0, -1)} == ids

    run(redis_srv.url, body)
