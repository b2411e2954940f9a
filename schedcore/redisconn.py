"""The Redis connection every Redis-using service opens (api and scheduler; never the executor)."""

from __future__ import annotations

from typing import Any

import redis.exceptions  # noqa: F401 - defines the classes REDIS_UNAVAILABLE names
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from schedcore.errors import redis_unavailable_errors
from schedcore.settings import Settings

# Failures of Redis that a retry may cure: background loops wait and try again; calls get
# UNAVAILABLE (schedcore.errors.status_for).
REDIS_UNAVAILABLE = redis_unavailable_errors()
assert REDIS_UNAVAILABLE, "redis is imported above, so its exception classes are known"


def connect(settings: Settings) -> Redis:
    """A pooled async client that reconnects by itself.

    One quick retry covers the pooled connection that went stale when Redis restarted; a Redis
    that stays down fails the call within about redis_timeout_s, which callers see as UNAVAILABLE.

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
        return Redis.from_url(settings.redis_url, **options)
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
    client: Redis = sentinel.master_for(settings.redis_sentinel_master)
    return client
