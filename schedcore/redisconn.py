"""The Redis connection every Redis-using service opens (api and scheduler; never the executor)."""

from __future__ import annotations

from typing import Any

from redis import exceptions
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from schedcore.errors import StoreUnavailable
from schedcore.settings import Settings

# Failures of Redis that a retry may cure (AuthenticationError and BusyLoadingError are
# ConnectionErrors; the rest come during a failover). The client below raises StoreUnavailable
# from them: background loops wait and try again, calls get UNAVAILABLE.
UNAVAILABLE = (
    exceptions.ConnectionError,
    exceptions.TimeoutError,
    exceptions.TryAgainError,
    exceptions.ReadOnlyError,
    exceptions.MasterDownError,
)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class StoreRedis(Redis):
    """The store's client: a Redis failure that a retry may cure surfaces as StoreUnavailable,
    so no layer above the store knows redis-py's exceptions. Scripts run through
    execute_command, pipelines through StorePipeline.execute."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]  # redis-py
        except UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> StorePipeline:
        return StorePipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def from_url(url: str, **options: Any) -> StoreRedis:
    """A StoreRedis client for `url` (tools and tests; the services use connect())."""
    client = StoreRedis.from_url(url, **options)
    assert isinstance(client, StoreRedis)  # from_url builds cls
    return client


class StorePipeline(Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error)
        except UNAVAILABLE as exc:
            raise _unavailable(exc) from exc


def connect(settings: Settings) -> StoreRedis:
    """A pooled async client that reconnects by itself.

    One quick retry covers the pooled connection that went stale when Redis restarted; a Redis
    that stays down fails the call within about redis_timeout_s with StoreUnavailable
    (UNAVAILABLE to callers).

    With REDIS_SENTINELS, the client asks the Sentinels for the current master before it opens a
    connection, so after a failover new connections go to the new master; calls that fail during
    the switch (the old master is gone or now a read-only replica) get UNAVAILABLE.
    """
    timeouts = {
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": min(2.0, settings.redis_timeout_s),
    }
    options: dict[str, Any] = {
        **timeouts,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        "decode_responses": False,
        "client_name": "scheduler-suite",
    }
    if not settings.redis_sentinels:
        return from_url(settings.redis_url, **options)
    target: dict[str, Any] = dict(parse_url(settings.redis_url))  # the Sentinels give the address
    target.pop("host", None)
    target.pop("port", None)
    if target.pop("connection_class", None) is SSLConnection:
        target["ssl"] = True
    sentinel = Sentinel(
        list(settings.redis_sentinels),
        sentinel_kwargs={**timeouts, "password": settings.redis_sentinel_password or None},
        **options,
        **target,
    )
    client = sentinel.master_for(settings.redis_sentinel_master, redis_class=StoreRedis)
    assert isinstance(client, StoreRedis)  # master_for builds redis_class
    return client
