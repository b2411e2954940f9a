"""Which scheduler works which partition: a membership set and one owner lease per partition
(docs/partitions.md, "Schedulers share partitions").

Safety never rests on these (firing, leasing and results are fenced on their own); they keep
every partition worked by one live scheduler and spread the partitions over the replicas."""

from __future__ import annotations

from redis.asyncio import Redis

from schedcore.store.keys import Partitions
from schedcore.store.scripts import Scripts


class OwnershipStore:
    def __init__(self, redis: Redis, partitions: Partitions, scripts: Scripts) -> None:
        self.redis = redis
        self.partitions = partitions
        self.scripts = scripts

    async def heartbeat(self, instance_id: str, lease_ms: int) -> list[str]:
        """Keep `instance_id` a member for `lease_ms` (Redis clock), drop the members whose
        heartbeats stopped, and return the live members (sorted)."""
        key = self.partitions.home.schedulers
        seconds, micros = await self.redis.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {instance_id: now + lease_ms})
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zrange(key, 0, -1)
            *_, members = await pipe.execute()
        return sorted(m.decode() for m in members)

    async def leave(self, instance_id: str) -> None:
        """Stop being a member at once (a scheduler shutting down)."""
        await self.redis.zrem(self.partitions.home.schedulers, instance_id)

    async def claim(self, partition: int, instance_id: str, lease_ms: int) -> bool:
        """Take or renew the owner lease of `partition`; False when another scheduler holds it."""
        key = self.partitions.all[partition].owner
        return bool(await self.scripts.partition_claim(keys=[key], args=[instance_id, lease_ms]))

    async def release(self, partition: int, instance_id: str) -> bool:
        """Give the owner lease of `partition` up if `instance_id` holds it."""
        key = self.partitions.all[partition].owner
        return bool(await self.scripts.partition_release(keys=[key], args=[instance_id]))

    async def owner(self, partition: int) -> str | None:
        raw: bytes | None = await self.redis.get(self.partitions.all[partition].owner)  # type: ignore[assignment]
        return raw.decode() if raw is not None else None
