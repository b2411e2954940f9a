"""The scheduler's loops outlive errors other than "Redis unavailable" (e.g. out of memory)."""

from __future__ import annotations

import asyncio
import contextlib

from schedcore import pb, redisconn
from schedcore.server import cancel_and_wait
from schedcore.store import Store
from services.scheduler.firing import Firer
from tests.conftest import api_settings
from tests.integration.engine_harness import NoExecutors
from tests.integration.helpers import cron_task
from tests.support import RedisServer, redis_server


def test_firing_loop_survives_redis_out_of_memory() -> None:
    with redis_server() as own:
        _run(own)


def _run(own: RedisServer) -> None:
    async def scenario() -> None:
        redis = redisconn.from_url(own.url)
        store = Store(redis)
        try:
            task = pb.Task(
                id="0123456789abcdef",
                name="tick",
                schedule=cron_task("tick", "* * * * * *").schedule,
                target=pb.Target(log=pb.LogTarget()),
            )
            now = await store.now_ms()
            await store.tasks.create(task.id, task, pb.TaskState.TASK_STATE_ACTIVE, now - 500)
            # Writes now fail with OOM (noeviction): every firing round raises.
            await redis.config_set("maxmemory-policy", "noeviction")
            await redis.config_set("maxmemory", 1)
            settings = api_settings(own.url, poll_interval_s=0.02)
            firer = Firer(store.engine, settings, NoExecutors())
            loop = asyncio.create_task(firer.run())
            await asyncio.sleep(1.2)
            assert not loop.done(), "the firing loop died"
            assert firer.fired == 0
            await redis.config_set("maxmemory", 0)
            for _ in range(100):
                if firer.fired:
                    break
                await asyncio.sleep(0.05)
            assert firer.fired >= 1, "firing did not resume once Redis had memory again"
            await cancel_and_wait(loop)
        finally:
            with contextlib.suppress(Exception):
                await redis.config_set("maxmemory", 0)
            await redis.aclose()

    asyncio.run(scenario())
