"""The Redis connection every Redis-using service opens (api and scheduler; never the executor)."""

from __future__ import annotations

import redis.exceptions  # noqa: F401 - defines the classes REDIS_UNAVAILABLE names
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
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
    """
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=min(2.0, settings.redis_timeout_s),
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        decode_responses=False,
        client_name="scheduler-suite",
    )
