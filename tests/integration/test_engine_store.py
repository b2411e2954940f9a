"""The engine's dispatch scripts attacked directly: the concurrency invariants of docs/engine.md
("Invariants": every execution ends, fenced results), against a real Redis. Firing's scripts are
in test_engine_firing.py; the harness (stores on separate clients, the gate that forces an
interleaving) in engine_harness.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from schedcore import pb
from schedcore.store.engine import Completion
from schedcore.store.keys import execution_id
from tests.integration import helpers
from tests.integration.engine_harness import (
    HOUR_MS,
    S,
    Stores,
    due_api_task,
    field,
    finish,
    fire,
    gate,
    inflight_score,
    new_task,
    queue,
    ready_score,
    reclaim,
    run,
    wait_past,
)
from tests.integration.helpers import TIMEOUT, get

# The api once per module, and a client on a flushed Redis per test (see helpers.py).
api = helpers.api
stub = helpers.stub


# --- 6. dispatch_lease: concurrent replicas never hand out the same execution --------------------------


def _concurrent_lease_ready(url: str, replicas: int) -> None:
    async def body(stores: Stores) -> None:
        setup = stores.new()
        task_id = await new_task(setup, (await setup.now_ms()) + HOUR_MS)
        ids = set(await queue(setup, task_id, 150))
        replicas_ = [stores.new() for _ in range(replicas)]
        barrier = asyncio.Barrier(replicas)
        for store in replicas_:
            gate(store, "dispatch_lease", barrier)
        results = await asyncio.gather(*(s.engine.lease_ready(500, 60_000) for s in replicas_))
        handed = [(i.execution.id, i.token) for batch in results for i in batch]
        assert Counter(e for e, _ in handed).most_common(1)[0][1] == 1, "an execution was handed out twice"
        assert {e for e, _ in handed} == ids
        for exec_id, token in handed:
            key = setup.keys.execution(exec_id)
            assert await field(setup, key, "status") == str(S.EXECUTION_STATUS_RUNNING)
            assert await field(setup, key, "tok") == str(token) == "1"
            assert await inflight_score(setup, exec_id) is not None
        assert await setup.redis.zcard(setup.keys.ready) == 0
        assert await setup.engine.lease_ready(500, 60_000) == []

    run(url, body)


def test_two_concurrent_lease_ready_never_hand_out_an_execution_twice(redis_srv, rds):
    _concurrent_lease_ready(redis_srv.url, 2)


def test_eight_concurrent_lease_ready_never_hand_out_an_execution_twice(redis_srv, rds):
    _concurrent_lease_ready(redis_srv.url, 8)


def test_each_dispatch_lease_increments_the_token(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id = await new_task(store, (await store.now_ms()) + HOUR_MS)
        [eid] = await queue(store, task_id, 1)
        tokens = []
        for _ in range(3):
            [item] = await store.engine.lease_ready(10, 60_000)
            assert item.execution.status == S.EXECUTION_STATUS_RUNNING
            tokens.append(item.token)
            # handed back unrun: back to ready at once, no attempt counted
            assert await finish(store, eid, item.token, S.EXECUTION_STATUS_PENDING) == 1
            assert await ready_score(store, eid) is not None
        assert tokens == sorted(set(tokens)), tokens

    run(redis_srv.url, body)


# --- 7. dispatch_complete is fenced ---------------------------------------------------------------


def test_complete_after_reclaim_drops_the_old_holder_and_records_the_new(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id = await new_task(store, (await store.now_ms()) + HOUR_MS)
        [eid] = await queue(store, task_id, 1)
        key = store.keys.execution(eid)
        [old] = await store.engine.lease_ready(10, 200)
        await wait_past(store, int(await inflight_score(store, eid) or 0))
        assert await reclaim(store, 10) == [eid]
        assert await field(store, key, "status") == str(S.EXECUTION_STATUS_PENDING)
        assert await inflight_score(store, eid) is None and await ready_score(store, eid) is not None
        reclaimed_token = int(await field(store, key, "tok") or 0)
        assert reclaimed_token > old.token

        # Between reclaim and the next lease, nobody holds it: no token may complete it.
        for token in (old.token, reclaimed_token):
            assert await finish(store, eid, token) == 0
        assert await field(store, key, "status") == str(S.EXECUTION_STATUS_PENDING)

        [new] = await store.engine.lease_ready(10, 60_000)
        assert new.token > reclaimed_token
        before = await store.redis.hgetall(key)
        assert await finish(store, eid, old.token) == 0, "the old holder's result was recorded"
        assert await store.redis.hgetall(key) == before
        assert await inflight_score(store, eid) is not None

        assert await finish(store, eid, new.token) == 1
        assert await field(store, key, "status") == str(S.EXECUTION_STATUS_SUCCEEDED)
        assert await inflight_score(store, eid) is None and await ready_score(store, eid) is None

        # No longer in inflight: a second completion, even with the current token, is dropped.
        done = await store.redis.hgetall(key)
        assert await finish(store, eid, new.token, S.EXECUTION_STATUS_FAILED) == 0
        assert await store.redis.hgetall(key) == done

    run(redis_srv.url, body)


# --- 8. dispatch_renew ----------------------------------------------------------------------------


def test_renew_extends_only_with_the_current_token_and_unrenewed_leases_are_reclaimed(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id = await new_task(store, (await store.now_ms()) + HOUR_MS)
        await queue(store, task_id, 2)
        items = {i.execution.id: i for i in await store.engine.lease_ready(10, 300)}
        kept, lost = sorted(items)
        expiry = {e: await inflight_score(store, e) for e in items}

        assert (await store.engine.renew([(lost, items[lost].token + 1)], 60_000)).count == 0
        assert (await store.engine.renew([(lost, items[lost].token - 1)], 60_000)).count == 0
        assert await inflight_score(store, lost) == expiry[lost], "a wrong token extended a lease"
        assert (await store.engine.renew([(kept, items[kept].token)], 60_000)).count == 1
        assert (await inflight_score(store, kept) or 0) > (expiry[kept] or 0) + 30_000

        await wait_past(store, int(max(expiry.values()) or 0))
        assert await reclaim(store, 10) == [lost]
        assert await inflight_score(store, kept) is not None
        assert await field(store, store.keys.execution(kept), "status") == str(S.EXECUTION_STATUS_RUNNING)

        # Renewing a reclaimed lease, with the old token or the one reclaim set, does not bring it
        # back into inflight.
        current = int(await field(store, store.keys.execution(lost), "tok") or 0)
        for token in (items[lost].token, current):
            assert (await store.engine.renew([(lost, token)], 60_000)).count == 0
        assert await inflight_score(store, lost) is None and await ready_score(store, lost) is not None

    run(redis_srv.url, body)


def test_a_reclaim_that_lost_the_race_takes_nothing_from_the_new_holder(redis_srv, rds):
    """Replica 2 peeks an expired lease; before its reclaim script runs, replica 1 reclaims it
    and leases it again. Replica 2 must not reclaim the new holder's live lease."""

    async def body(stores: Stores) -> None:
        one, two = stores.new(), stores.new()
        task_id = await new_task(one, (await one.now_ms()) + HOUR_MS)
        [eid] = await queue(one, task_id, 1)
        [first] = await one.engine.lease_ready(10, 200)
        await wait_past(one, int(await inflight_score(one, eid) or 0))
        taken: list[Any] = []
        original = two.engine.scripts.dispatch_reclaim

        async def overtaken(keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
            assert await reclaim(one, 10) == [eid]
            taken.extend(await one.engine.lease_ready(10, 60_000))
            return await original(keys=keys, args=args, client=client)

        two.engine.scripts.dispatch_reclaim = overtaken  # type: ignore[method-assign]
        assert await reclaim(two, 10) == []
        [holder] = taken
        assert holder.token > first.token
        assert await field(one, one.keys.execution(eid), "tok") == str(holder.token)
        assert await finish(one, eid, holder.token) == 1

    run(redis_srv.url, body)


def test_concurrent_reclaims_take_an_expired_lease_back_once(redis_srv, rds):
    async def body(stores: Stores) -> None:
        setup = stores.new()
        task_id = await new_task(setup, (await setup.now_ms()) + HOUR_MS)
        ids = set(await queue(setup, task_id, 50))
        leased = await setup.engine.lease_ready(100, 200)
        tokens = {i.execution.id: i.token for i in leased}
        await wait_past(setup, max([int(await inflight_score(setup, e) or 0) for e in ids]))
        replicas = [stores.new() for _ in range(4)]
        barrier = asyncio.Barrier(len(replicas))
        for store in replicas:
            gate(store, "dispatch_reclaim", barrier)
        results = await asyncio.gather(*(reclaim(s, 100) for s in replicas))
        reclaimed = [e for r in results for e in r]
        assert sorted(reclaimed) == sorted(ids), "an expired lease was reclaimed twice (or not at all)"
        for e in ids:
            assert await field(setup, setup.keys.execution(e), "tok") == str(tokens[e] + 1)
        assert await setup.redis.zcard(setup.keys.ready) == len(ids)
        assert await setup.redis.zcard(setup.keys.inflight) == 0

    run(redis_srv.url, body)


# --- 9. a full cycle, seen through the api -------------------------------------------------------


def test_full_cycle_leaves_no_bookkeeping_and_the_api_shows_the_final_status(redis_srv, stub, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        created, held = await due_api_task(stub, store, "cycle")
        assert await fire(store, [held]) == [1]
        eid = execution_id(created.id, held.nominal_ms)
        assert get(stub, created.id).last_execution.execution_id == eid

        [item] = await store.engine.lease_ready(10, 60_000)
        assert item.execution.id == eid and item.spec is not None
        raw = pb.Execution.FromString(await store.redis.hget(store.keys.execution(eid), "pb"))
        assert raw.status == S.EXECUTION_STATUS_PENDING  # the record still says pending ...
        got = stub.GetExecution(pb.GetExecutionRequest(id=eid), timeout=TIMEOUT).execution
        assert got.status == S.EXECUTION_STATUS_RUNNING  # ... the hash's status field wins
        listed = helpers.list_all_executions(stub, task_id=created.id)
        assert [(e.id, e.status) for e in listed] == [(eid, S.EXECUTION_STATUS_RUNNING)]

        assert await finish(store, eid, item.token) == 1
        assert await ready_score(store, eid) is None
        assert await inflight_score(store, eid) is None
        task = get(stub, created.id)
        assert task.last_execution.execution_id == eid
        assert task.last_execution.status == S.EXECUTION_STATUS_SUCCEEDED
        got = stub.GetExecution(pb.GetExecutionRequest(id=eid), timeout=TIMEOUT).execution
        assert got.status == S.EXECUTION_STATUS_SUCCEEDED and got.executor == "x"
        listed = helpers.list_all_executions(stub, task_id=created.id)
        assert [(e.id, e.status) for e in listed] == [(eid, S.EXECUTION_STATUS_SUCCEEDED)]
        # The status filter of ListExecutions uses the same authoritative status.
        succeeded = helpers.list_all_executions(stub, status=S.EXECUTION_STATUS_SUCCEEDED)
        assert [e.id for e in succeeded] == [eid]

    run(redis_srv.url, body)


# --- dispatch_park: command executions set aside, fenced ---------------------------------------------


def test_park_sets_aside_only_executions_whose_lease_the_caller_holds(redis_srv, rds):
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id = await new_task(store, (await store.now_ms()) + HOUR_MS)
        ids = await queue(store, task_id, 3)
        items = await store.engine.lease_ready(10, 60_000)
        assert {i.execution.id for i in items} == set(ids)
        tokens = {i.execution.id: i.token for i in items}
        stale = ids[2]
        await store.redis.hincrby(store.keys.execution(stale), "tok", 1)  # taken over meanwhile
        parked = await store.engine.park([(i, tokens[i]) for i in ids])
        assert parked == 2
        for exec_id in ids[:2]:
            assert await store.redis.zscore(store.keys.ready_command, exec_id) is not None
            assert await inflight_score(store, exec_id) is None
            assert await field(store, store.keys.execution(exec_id), "status") == str(
                S.EXECUTION_STATUS_PENDING
            )
            assert await field(store, store.keys.execution(exec_id), "tok") == str(tokens[exec_id])
        assert await inflight_score(store, stale) is not None, "a stale holder moved a lease it lost"
        assert await store.redis.zscore(store.keys.ready_command, stale) is None
        assert await store.redis.zcard(store.keys.ready) == 0
        # Only a replica that runs command work takes them back, from their own queue.
        again = await store.engine.lease_ready(10, 60_000, queue=store.keys.ready_command)
        assert {i.execution.id for i in again} == set(ids[:2])
        assert all(i.token == tokens[i.execution.id] + 1 for i in again)

    run(redis_srv.url, body)


# --- batched writes: one variadic command per key per call (prelude.lua, `gather`) -------------


def test_a_lease_larger_than_one_chunk_leases_each_execution_once(redis_srv, rds) -> None:
    """2,100 candidates: the scores are read and the moves written in several chunks."""

    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id = await new_task(store, (await store.now_ms()) + HOUR_MS)
        ids = await queue(store, task_id, 2_100)
        items = await store.engine.lease_ready(5_000, 60_000, ids)
        assert sorted(i.execution.id for i in items) == sorted(ids)
        assert await store.redis.zcard(store.keys.ready) == 0
        assert await store.redis.zcard(store.keys.inflight) == 2_100
        assert {i.token for i in items} == {1}

    run(redis_srv.url, body)


def test_an_id_given_twice_is_leased_once_and_recorded_once(redis_srv, rds) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id = await new_task(store, (await store.now_ms()) + HOUR_MS)
        [exec_id] = await queue(store, task_id, 1)
        items = await store.engine.lease_ready(10, 60_000, [exec_id, exec_id])
        assert [(i.execution.id, i.token) for i in items] == [(exec_id, 1)]
        # The same result twice in one call (a resend): recorded once, queued again once.
        [(record, _)] = await store.engine.records([exec_id])
        assert record is not None
        now = await store.now_ms()
        record.status = S.EXECUTION_STATUS_FAILED
        retry = Completion(record, 1, now + 60_000, None)
        assert (await store.engine.complete([retry, retry], now)).recorded == [True, False]
        assert await ready_score(store, exec_id) == now + 60_000
        assert await inflight_score(store, exec_id) is None

    run(redis_srv.url, body)
