"""Counters behind GetStats: tasks by state, and per-minute execution outcomes and lag.

The scripts that change a task's state keep `stats:tasks` in step; the scripts that end an
execution for good (dispatch_complete, and fire_commit for skipped occurrences) count it in the
hash of the minute it ended (by the Redis clock), with its lag (start minus nominal time) in a
fixed histogram bucket. Minute hashes expire a day after their minute, so stats cover at most
the last 24 hours and cost a bounded amount of memory (about 1,440 small hashes).

Every partition has its own counters (the scripts of a task's partition move them); `read` sums
them, in one pipeline over all partitions.

Percentiles come from the histogram: an estimate, interpolated inside the bucket they fall in.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from schedcore.store.keys import Partitions

MINUTE_MS = 60_000
# Longest window served: minute hashes live a day (plus an hour of slack: EXPIRE in the scripts).
MAX_MINUTES = 24 * 60
# Upper bounds (ms, inclusive) of the lag buckets; one more bucket holds everything above.
LAG_BOUNDS_MS: tuple[int, ...] = (
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000,
)  # fmt: skip


def minute_of(ms: int) -> int:
    return ms // MINUTE_MS


def lag_bucket(lag_ms: int) -> int:
    """Index of the histogram bucket holding `lag_ms` (0 .. len(LAG_BOUNDS_MS))."""
    return bisect.bisect_left(LAG_BOUNDS_MS, max(0, lag_ms))


def percentile_ms(histogram: Sequence[int], q: float) -> int | None:
    """The q-quantile (0 < q <= 1) estimated from bucket counts, or None when empty.

    Linear inside the bucket it falls in; in the open-ended last bucket, its lower bound."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            low = LAG_BOUNDS_MS[i - 1] if i > 0 else 0
            if i >= len(LAG_BOUNDS_MS):
                return low
            high = LAG_BOUNDS_MS[i]
            return round(low + (high - low) * (rank - seen) / count)
        seen += count
    return LAG_BOUNDS_MS[-1]  # pragma: no cover - rank <= total always lands above


@dataclass
class MinuteStats:
    """What ended in one minute: counts by ExecutionStatus number, and the lag histogram."""

    statuses: dict[int, int] = field(default_factory=dict)
    lag: list[int] = field(default_factory=lambda: [0] * (len(LAG_BOUNDS_MS) + 1))

    @classmethod
    def decode(cls, raw: Mapping[bytes, bytes]) -> MinuteStats:
        out = cls()
        for name, value in raw.items():
            kind, index = name[:1], int(name[1:])
            if kind == b"s":
                out.statuses[index] = int(value)
            elif kind == b"l" and 0 <= index < len(out.lag):
                out.lag[index] = int(value)
        return out

    def add(self, other: MinuteStats) -> None:
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        for i, count in enumerate(other.lag):
            self.lag[i] += count


@dataclass(frozen=True)
class Backlog:
    """What waits in one partition now: queued to dispatch, held by executors, set aside for a
    command-capable executor (docs/redis-layout.md: `ready`, `inflight`, `ready:command`)."""

    ready: int
    in_flight: int
    waiting_command: int


class StatsStore:
    def __init__(self, redis: Redis, partitions: Partitions) -> None:
        self.redis = redis
        self.partitions = partitions

    async def read(
        self, first_minute: int, minutes: int
    ) -> tuple[dict[int, int], list[MinuteStats], int, int]:
        """(task counts by state, stats of each minute from `first_minute`, ready, in flight),
        summed over every partition."""
        per_partition = 4 + minutes
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.partitions.all:
                pipe.hgetall(keys.task_counts)
                pipe.zcard(keys.ready)
                pipe.zcard(keys.inflight)
                pipe.zcard(keys.ready_command)
                for minute in range(first_minute, first_minute + minutes):
                    pipe.hgetall(keys.minute_stats(minute))
            raw = await pipe.execute()
        counts: dict[int, int] = {}
        per_minute = [MinuteStats() for _ in range(minutes)]
        ready = inflight = 0
        for at in range(0, len(raw), per_partition):
            part = raw[at : at + per_partition]
            for state, n in part[0].items():
                counts[int(state)] = counts.get(int(state), 0) + max(0, int(n))
            ready += int(part[1]) + int(part[3])  # command executions set aside wait too
            inflight += int(part[2])
            for total, minute in zip(per_minute, part[4:], strict=True):
                total.add(MinuteStats.decode(minute))
        return counts, per_minute, ready, inflight

    async def backlog(self, partitions: Sequence[int]) -> dict[int, Backlog]:
        """The backlog of each of `partitions`: three ZCARDs each, in one pipeline (one round
        trip). `ready` counts retries waiting out their backoff too (scored by when they may
        start), as GetStats' ready figure does."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in partitions:
                keys = self.partitions.all[p]
                pipe.zcard(keys.ready)
                pipe.zcard(keys.inflight)
                pipe.zcard(keys.ready_command)
            raw = await pipe.execute()
        return {
            p: Backlog(int(raw[3 * i]), int(raw[3 * i + 1]), int(raw[3 * i + 2]))
            for i, p in enumerate(partitions)
        }

    async def task_total(self, state: int = 0) -> int | None:
        """How many tasks there are (in `state`, unless 0), over every partition, without reading
        any: the name index's size, or the state counters. None for a state while the counters
        are incomplete (they miss tasks stored before the counters existed), so a count is
        never a guess."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.partitions.all:
                pipe.zcard(keys.by_name)
                pipe.hgetall(keys.task_counts)
            raw = await pipe.execute()
        total = sum(int(n) for n in raw[0::2])
        if not state:
            return total
        counts: dict[int, int] = {}
        for part in raw[1::2]:
            for key, n in part.items():
                counts[int(key)] = counts.get(int(key), 0) + max(0, int(n))
        return counts.get(state, 0) if sum(counts.values()) == total else None
