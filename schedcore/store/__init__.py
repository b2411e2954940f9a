"""The Redis store: tasks, their indexes and execution history. Layout: docs/redis-layout.md."""

from __future__ import annotations

import asyncio
import secrets
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from schedcore.redisconn import StoreClient, StoreRedis, StoreRedisCluster
from schedcore.settings import SettingsError
from schedcore.store.alerts import AlertStore
from schedcore.store.audit import AuditStore
from schedcore.store.channels import ChannelStore
from schedcore.store.engine import EngineStore
from schedcore.store.executions import ExecutionStore
from schedcore.store.keys import Keys, Partitions
from schedcore.store.migrate import parse_record
from schedcore.store.notifications import NotificationStore
from schedcore.store.ownership import OwnershipStore
from schedcore.store.replicas import NO_WAIT, ReplicaWait
from schedcore.store.scripts import Scripts
from schedcore.store.stats import StatsStore
from schedcore.store.tasks import TaskStore
from schedcore.store.tokens import TokenStore


class Store:
    """Everything the api and the scheduler read and write in Redis."""

    def __init__(
        self, client: StoreClient, prefix: str = "ts", partitions: int = 1, wait: ReplicaWait = NO_WAIT
    ) -> None:
        """`wait`: the api's acknowledged writes wait for replicas (REDIS_WAIT_REPLICAS)."""
        if not isinstance(client, StoreRedis | StoreRedisCluster):  # failures as StoreUnavailable
            raise TypeError(
                "Store needs a schedcore.redisconn.StoreRedis or StoreRedisCluster client (connect())"
            )
        self.client = client
        # The stores below are written against Redis' commands, which RedisCluster has too
        # (redis-py's cluster command mixins): every command of theirs names its keys, every
        # script has its partition's keys, so a cluster client routes each by its slot.
        redis = cast(Redis, client)
        self.redis = redis
        self.partitions = Partitions(prefix, partitions)
        self.keys = self.partitions.home  # partition 0: the global keys
        scripts = Scripts(redis, wait)
        self.tasks = TaskStore(redis, self.partitions, scripts)
        self.executions = ExecutionStore(redis, self.partitions, scripts)
        # One engine per partition: the scheduler fires, dispatches and reclaims each on its own.
        # Under Redis Cluster the engine declares every key its scripts touch: a slot may migrate.
        cluster = isinstance(client, StoreRedisCluster)
        self.engines = tuple(EngineStore(redis, keys, scripts, cluster) for keys in self.partitions.all)
        self.engine = self.engines[0]
        self.alerts = tuple(AlertStore(redis, keys, scripts) for keys in self.partitions.all)
        self.stats = StatsStore(redis, self.partitions)
        self.tokens = TokenStore(redis, self.keys, scripts)
        self.channels = ChannelStore(redis, self.keys, scripts)  # global: partition 0
        self.notifications = NotificationStore(redis, self.partitions)
        self.audit = AuditStore(redis, self.partitions)
        self.ownership = OwnershipStore(redis, self.partitions, scripts)
        self.layout_checked = asyncio.Event()

    def engine_of(self, execution_id: str) -> EngineStore:
        """The engine of the partition holding `execution_id`."""
        return self.engines[self.partitions.of_execution(execution_id)]

    async def check_partitions(self) -> None:
        """Record PARTITIONS on first start; refuse (SettingsError) a count other than the one the
        data was laid out with (docs/partitions.md, "Changing P")."""
        key = self.keys.partition_count
        if not await self.redis.exists(key):
            # Data written before the count was recorded is laid out in one partition.
            home = self.keys
            held = await self.redis.exists(home.by_name, home.history, home.ready, home.inflight)
            await self.redis.set(key, 1 if held else self.partitions.count, nx=True)
        recorded, target, _ = parse_record(await self.redis.get(key) or self.partitions.count)
        if target is not None:
            raise SettingsError(
                f"PARTITIONS: this Redis is being moved from {recorded} to {target} partitions, or "
                f"a move was interrupted: finish it with `schedctl partitions migrate --to {target}` "
                f'(docs/partitions.md, "Changing P")'
            )
        if recorded != self.partitions.count:
            raise SettingsError(
                f"PARTITIONS: this Redis holds data laid out in {recorded} partitions, not "
                f"{self.partitions.count}; set PARTITIONS={recorded} (changing it means moving the "
                f'data: docs/partitions.md, "Changing P")'
            )

    async def now_ms(self) -> int:
        """The one clock: Redis' TIME, in milliseconds (docs/guarantees.md, promise 4)."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def ping(self) -> bool:
        """Redis answers; under Redis Cluster every primary does (so every partition's node)."""
        if isinstance(self.client, StoreRedisCluster):
            return bool(await self.client.ping(target_nodes=RedisCluster.PRIMARIES))
        return bool(await self.redis.ping())

    async def ready(self) -> bool:
        """The services' ready check: Redis answers, and (checked once) holds its data in this
        many partitions; SettingsError otherwise, which stops the service (schedcore/server.py).
        `layout_checked` is set once the count matched: the scheduler's loops wait for it."""
        if not self.layout_checked.is_set():
            await self.check_partitions()
            self.layout_checked.set()
        return await self.ping()

    async def page_token_secret(self) -> bytes:
        """A secret shared by every replica, created by whichever asks first."""
        key = self.keys.page_token_secret
        await self.redis.set(key, secrets.token_hex(32), nx=True)
        value: bytes | None = await self.redis.get(key)  # type: ignore[assignment]
        assert value is not None
        return value


__all__ = [
    "AuditStore",
    "ChannelStore",
    "EngineStore",
    "ExecutionStore",
    "Keys",
    "NotificationStore",
    "Store",
    "TaskStore",
    "TokenStore",
]
