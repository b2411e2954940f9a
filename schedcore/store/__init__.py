"""The Redis store: tasks, their indexes and execution history. Layout: docs/redis-layout.md."""

from __future__ import annotations

import secrets

from schedcore.redisconn import StoreRedis
from schedcore.store.audit import AuditStore
from schedcore.store.engine import EngineStore
from schedcore.store.executions import ExecutionStore
from schedcore.store.keys import Keys
from schedcore.store.scripts import Scripts
from schedcore.store.stats import StatsStore
from schedcore.store.tasks import TaskStore
from schedcore.store.tokens import TokenStore


class Store:
    """Everything the api and the scheduler read and write in Redis."""

    def __init__(self, redis: StoreRedis, prefix: str = "ts") -> None:
        if not isinstance(redis, StoreRedis):  # its failures must arrive as StoreUnavailable
            raise TypeError("Store needs a schedcore.redisconn.StoreRedis client (connect())")
        self.redis = redis
        self.keys = Keys(prefix)
        scripts = Scripts(redis)
        self.tasks = TaskStore(redis, self.keys, scripts)
        self.executions = ExecutionStore(redis, self.keys, scripts)
        self.engine = EngineStore(redis, self.keys, scripts)
        self.stats = StatsStore(redis, self.keys)
        self.tokens = TokenStore(redis, self.keys, scripts)
        self.audit = AuditStore(redis, self.keys)

    async def now_ms(self) -> int:
        """The one clock: Redis' TIME, in milliseconds (docs/guarantees.md, promise 4)."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def page_token_secret(self) -> bytes:
        """A secret shared by every replica, created by whichever asks first."""
        key = self.keys.page_token_secret
        await self.redis.set(key, secrets.token_hex(32), nx=True)
        value: bytes | None = await self.redis.get(key)  # type: ignore[assignment]
        assert value is not None
        return value


__all__ = ["AuditStore", "EngineStore", "ExecutionStore", "Keys", "Store", "TaskStore", "TokenStore"]
