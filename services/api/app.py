"""Assembles the api service: Redis store, TaskService, AuthService, AuditService, AlertService,
the authentication hook, the retention sweeper, shared bootstrap."""

from __future__ import annotations

import asyncio
import logging

from schedcore import pb
from schedcore.redisconn import connect
from schedcore.server import GrpcService, cancel_and_wait
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.replicas import ReplicaWait
from services.api.access import PUBLIC_SERVICES, Authenticator
from services.api.alerts import AlertService
from services.api.audit import AuditService
from services.api.auth import AuthService, bootstrap
from services.api.pagetoken import PageTokens
from services.api.ratelimit import RateLimiter
from services.api.retention import sweep_forever
from services.api.servicer import TaskService

log = logging.getLogger("api")


async def build(settings: Settings) -> GrpcService:
    redis = connect(settings)
    # Writes a client gets acknowledged wait for REDIS_WAIT_REPLICAS replicas; the scheduler's never do.
    wait = ReplicaWait.of(settings.redis_wait_replicas, settings.redis_timeout_s)
    store = Store(redis, settings.redis_key_prefix, settings.partitions, wait)
    tokens = PageTokens(settings.page_token_secret.encode(), settings.page_token_ttl_s)
    authenticator = Authenticator(
        store.tokens,
        settings.auth_mode,
        settings.auth_cache_s,
        store.now_ms,
        RateLimiter(settings.api_rate_limit, settings.api_rate_burst),
    )
    servicer = TaskService(store, settings, tokens)
    auth = AuthService(store, settings, tokens, authenticator)
    audit = AuditService(store, tokens, settings.list_page_max_bytes)
    alerts = AlertService(store, settings, tokens)
    sweeper: asyncio.Task[None] | None = None
    bootstrapped = not settings.auth_bootstrap_token
    if settings.auth_mode == "none":
        log.warning(
            "AUTH_MODE=none: authentication is off and every caller is an admin; "
            "for local development and tests only"
        )

    def register(server: object) -> list[str]:
        pb.task_service_grpc.add_TaskServiceServicer_to_server(servicer, server)
        pb.auth_service_grpc.add_AuthServiceServicer_to_server(auth, server)
        pb.audit_service_grpc.add_AuditServiceServicer_to_server(audit, server)
        pb.alert_service_grpc.add_AlertServiceServicer_to_server(alerts, server)
        return [service.full_name for service in PUBLIC_SERVICES]

    async def ready() -> bool:
        nonlocal bootstrapped
        ok = await store.ready()
        if ok and tokens.unset:  # the shared secret lives in Redis: fetch it once Redis answers
            tokens.set_secret(await store.page_token_secret())
        if ok and not bootstrapped:  # the first admin token, once Redis answers
            await bootstrap(store, settings.auth_bootstrap_token)
            bootstrapped = True
            log.info("AUTH_BOOTSTRAP_TOKEN is an admin token (named bootstrap)")
        return ok

    async def start() -> None:
        nonlocal sweeper
        sweeper = asyncio.create_task(sweep_forever(store, settings), name="retention")

    async def close() -> None:
        if sweeper is not None:
            await cancel_and_wait(sweeper)
        await redis.aclose()

    return GrpcService(
        "api",
        settings,
        register,
        ready,
        close,
        on_start=start,
        authenticate=authenticator,
        max_concurrent_rpcs=settings.api_max_concurrent_rpcs,
        reuse_port=settings.api_processes != 1,  # the other server processes share its port
    )
