"""Expired dispatch leases: reclaimed with a new token, and a poison execution ends FAILED."""

from __future__ import annotations

import asyncio

from schedcore import pb, redisconn
from schedcore.settings import Settings
from schedcore.store import Store
from services.scheduler.results import Recorder
from tests.conftest import api_settings
from tests.integration.helpers import once_task
from tests.support import RedisServer

# Deliveries lost that the reclaim takes back before it ends the execution FAILED (MAX_DELIVERIES).
LOSSES = Settings().max_deliveries - 1


def test_execution_losing_its_executor_too_often_ends_failed(redis_srv: RedisServer, stub) -> None:
    task = stub.CreateTask(pb.CreateTaskRequest(task=once_task())).task
    run = stub.RunTask(pb.RunTaskRequest(id=task.id)).execution

    async def scenario() -> list[tuple[int, int]]:
        redis = redisconn.from_url(redis_srv.url)
        store = Store(redis)
        settings = api_settings(redis_srv.url)
        seen = []
        try:
            for _ in range(LOSSES + 1):
                assert len(await store.engine.lease_ready(10, lease_ms=1)) == 1
                await asyncio.sleep(0.01)  # the executor "dies": the lease expires
                taken = await store.engine.reclaim(10, LOSSES, 60_000)
                seen.append((len(taken.queued), len(taken.failed)))
                if taken.failed:
                    await Recorder(store, settings).fail_lost(
                        taken.failed, await store.now_ms(), "failed: lost"
                    )
            assert await store.engine.lease_ready(10, lease_ms=1) == []
            assert await redis.zcard(store.keys.inflight) == 0
            assert await redis.zcard(store.keys.ready) == 0
        finally:
            await redis.aclose()
        return seen

    seen = asyncio.run(scenario())
    assert seen == [(1, 0)] * LOSSES + [(0, 1)]
    final = stub.GetExecution(pb.GetExecutionRequest(id=run.id)).execution
    assert final.status == pb.ExecutionStatus.EXECUTION_STATUS_FAILED
    assert final.status_message == "failed: lost"
    assert final.HasField("finish_time")
    last = stub.GetTask(pb.GetTaskRequest(id=task.id)).task.last_execution
    assert (last.execution_id, last.status) == (run.id, pb.ExecutionStatus.EXECUTION_STATUS_FAILED)
