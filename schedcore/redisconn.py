"""The Redis connection every Redis-using service opens (api and scheduler; never the executor)."""

from __future__ import annotations

import os
import traceback
from typing import Any

from redis import exceptions
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
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
# Under Redis Cluster also: the cluster is down or a slot has no primary for now (during a
# failover or while a node is unreachable), a slot was redirected more often than the client
# follows (ClusterError "TTL exhausted", a slot moving to and fro), and the layout could not be
# learned from any node (RedisClusterException from initialize(), see StoreRedisCluster).
CLUSTER_UNAVAILABLE = (
    *UNAVAILABLE,
    exceptions.ClusterDownError,
    exceptions.SlotNotCoveredError,
    exceptions.ClusterError,
)


def closed_under_us(exc: BaseException) -> bool:
    """Whether `exc` is redis-py's asyncio connection used after another task closed it: its
    stream writer or reader is None then, and the call fails with AttributeError or TypeError
    instead of ConnectionError (redis-py issues 3546 and 4287). redis-py's cluster client closes
    every connection, those in use too, after CLUSTERDOWN or every few MOVED (a slot migrated, a
    failover), so concurrent calls meet it. As after a lost connection, the command may or may
    not have run: UNAVAILABLE."""
    if not isinstance(exc, AttributeError | TypeError) or "NoneType" not in str(exc):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and any(part in frames[-1].filename for part in _CONNECTION_CODE)


# Where the closed stream raises: redis-py's connection and parsers, asyncio's streams.
_CONNECTION_CODE = (f"redis{os.sep}asyncio{os.sep}", f"redis{os.sep}_parsers{os.sep}", f"asyncio{os.sep}")
CLOSED_UNDER_US = (AttributeError, TypeError)


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The StoreUnavailable a redis-py failure surfaces as; its reason (for logs) names it."""
    return StoreUnavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class StoreRedis(Redis):
    """The store's client: a Redis failure that a retry may cure surfaces as StoreUnavailable,
    so no layer above the store knows redis-py's exceptions. Scripts run through
    execute_command, pipelines through StorePipeline.execute."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]  # redis-py
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

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
            raise unavailable(exc) from exc


class StoreRedisCluster(RedisCluster):
    """StoreRedis for Redis Cluster: each command and script goes to the primary serving its
    key's slot (a script's: its first key's; all its keys are one partition's, one slot), a
    pipeline is split by node, MOVED and ASK are followed; every failure a retry may cure
    surfaces as StoreUnavailable. Errors no retry cures (a script's error, CROSSSLOT) pass."""

    async def initialize(self, *args: Any, **kwargs: Any) -> StoreRedisCluster:
        try:
            await super().initialize(*args, **kwargs)
        except CLUSTER_UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        except exceptions.RedisClusterException as exc:  # no node reachable, slots not all covered
            raise unavailable(exc) from exc
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except CLUSTER_UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        except CLOSED_UNDER_US as exc:
            if closed_under_us(exc):
                raise unavailable(exc) from exc
            raise

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> StoreClusterPipeline:
        if shard_hint:
            raise exceptions.RedisClusterException("shard_hint is deprecated in cluster mode")
        # mypy sees an abstract attribute in redis-py's typing of ClusterPipeline's mixins; redis-py
        # builds its own ClusterPipeline the same way.
        return StoreClusterPipeline(self, transaction)  # type: ignore[abstract]


class StoreClusterPipeline(ClusterPipeline):
    async def initialize(self) -> StoreClusterPipeline:
        try:
            await super().initialize()
        except CLUSTER_UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        return self

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except CLUSTER_UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        except CLOSED_UNDER_US as exc:
            if closed_under_us(exc):
                raise unavailable(exc) from exc
            raise


# The client the store takes: one Redis (or Sentinel's master), or a Redis Cluster.
StoreClient = StoreRedis | StoreRedisCluster


def connect(settings: Settings) -> StoreClient:
    """A pooled async client that reconnects by itself.

    One quick retry covers the pooled connection that went stale when Redis restarted; a Redis
    that stays down fails the call within about redis_timeout_s with StoreUnavailable
    (UNAVAILABLE to callers).

    With REDIS_SENTINELS, the client asks the Sentinels for the current master before it opens a
    connection, so after a failover new connections go to the new master; calls that fail during
    the switch (the old master is gone or now a read-only replica) get UNAVAILABLE.

    With REDIS_CLUSTER_NODES, a StoreRedisCluster that learns the layout from those seeds on
    first use and again after a node is lost or a slot moves.
    """
    timeouts = {
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": min(2.0, settings.redis_timeout_s),
    }
    common: dict[str, Any] = {**timeouts, "decode_responses": False, "client_name": "scheduler-suite"}
    if settings.redis_cluster_nodes:
        return StoreRedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in settings.redis_cluster_nodes],
            # Attempts after a lost node or CLUSTERDOWN, each on a refreshed layout (redis-py uses
            # only the count): a failover takes longer than they do, its calls get UNAVAILABLE.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
            **common,
            **_credentials(settings.redis_url),
        )
    options = {**common, "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1)}
    if not settings.redis_sentinels:
        return from_url(settings.redis_url, **options)
    sentinel = Sentinel(
        list(settings.redis_sentinels),
        sentinel_kwargs={**timeouts, "password": settings.redis_sentinel_password or None},
        **options,
        **_credentials(settings.redis_url),
    )
    client = sentinel.master_for(settings.redis_sentinel_master, redis_class=StoreRedis)
    assert isinstance(client, StoreRedis)  # master_for builds redis_class
    return client


def _credentials(url: str) -> dict[str, Any]:
    """REDIS_URL's credentials, database and TLS options, without its address (Sentinel and
    Redis Cluster give the addresses)."""
    target: dict[str, Any] = dict(parse_url(url))
    target.pop("host", None)
    target.pop("port", None)
    if target.pop("connection_class", None) is SSLConnection:
        target["ssl"] = True
    return target
