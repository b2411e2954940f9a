"""Assembles the scheduler service: firing, dispatch, reclaim, and SchedulerService."""

from __future__ import annotations

import asyncio
from typing import Any

from schedcore import ipb
from schedcore.redisconn import connect
from schedcore.server import GrpcService, cancel_and_wait
from schedcore.settings import Settings
from schedcore.store import Store
from services.scheduler.dispatch import Dispatcher
from services.scheduler.firing import Firer
from services.scheduler.results import Recorder
from services.scheduler.servicer import SchedulerService


async def build(settings: Settings) -> GrpcService:
    redis = connect(settings)
    store = Store(redis, settings.redis_key_prefix)
    recorder = Recorder(store, settings)
    dispatcher = Dispatcher(store, settings, recorder)
    firer = Firer(store.engine, settings, dispatcher.poke)
    tasks: list[asyncio.Task[None]] = []

    def register(server: Any) -> list[str]:
        ipb.scheduler_grpc.add_SchedulerServiceServicer_to_server(SchedulerService(recorder), server)
        return [ipb.scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name]

    async def start() -> None:
        await dispatcher.links.refresh()
        for name, coro in (
            ("firing", firer.run()),
            ("dispatch", dispatcher.run()),
            ("reclaim", dispatcher.reclaim_forever()),
            ("discovery", dispatcher.links.run()),
        ):
            tasks.append(asyncio.create_task(coro, name=name))

    async def close() -> None:
        for task in tasks:
            await cancel_and_wait(task)
        dispatcher.links.close()
        await redis.aclose()

    return GrpcService("scheduler", settings, register, store.ping, close, on_start=start)
