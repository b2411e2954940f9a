"""Assembles the api service: Redis store, TaskService, retention sweeper, shared bootstrap."""

from __future__ import annotations

import asyncio
import logging

from schedcore import pb
from schedcore.redisconn import connect
from schedcore.server import GrpcService, cancel_and_wait
from schedcore.settings import Settings
from schedcore.store import Store
from services.api.pagetoken import PageTokens
from services.api.retention import sweep_forever
from services.api.servicer import TaskService

log = logging.getLogger("api")


async def build(settings: Settings) -> GrpcService:
    redis = connect(settings)
    store = Store(redis, settings.redis_key_prefix)
    tokens = PageTokens(settings.page_token_secret.encode(), settings.page_token_ttl_s)
    servicer = TaskService(store, settings, tokens)
    sweeper: asyncio.Task[None] | None = None

    def register(server: object) -> list[str]:
        pb.task_service_grpc.add_TaskServiceServicer_to_server(servicer, server)
        return [pb.task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name]

    async def ready() -> bool:
        ok = await store.ping()
        if ok and tokens.unset:  # the shared secret lives in Redis: fetch it once Redis answers
            tokens.set_secret(await store.page_token_secret())
        return ok

    async def start() -> None:
        nonlocal sweeper
        sweeper = asyncio.create_task(sweep_forever(store, settings), name="retention")

    async def close() -> None:
        if sweeper is not None:
            await cancel_and_wait(sweeper)
        await redis.aclose()

    return GrpcService("api", settings, register, ready, close, on_start=start)
