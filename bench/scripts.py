"""`python -m bench.scripts [N]`: what each engine script costs Redis per execution, and where the
stored bytes of a finished execution go, without the services (no gRPC, no executor).

N one-time tasks (default 10,000) are stored directly, then driven through the engine's calls the
way the scheduler makes them, in batches of 500: read_due (peek_due + fire_read), commit_fire,
lease_ready, complete. Each call's Redis time is the growth of INFO commandstats' EVALSHA
usec across it (the commands inside a script count in the script's time). At the end, MEMORY
USAGE of every key, summed by key kind. Its own redis-server (AOF everysec), so nothing else
runs on it; prints a table and one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections import Counter
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio

from schedcore import ipb, pb, redisconn
from schedcore.store import Store
from schedcore.timeutil import ms_to_ts
from services.scheduler.plan import plan
from services.scheduler.results import apply
from tests.support import redis_server

BATCH = 500
YEARLY = "0 0 1 1 *"  # fired once: a task does not come due again during the run
SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
T = TypeVar("T")


async def store_tasks(store: Store, n: int, next_ms: int) -> None:
    """n one-time log tasks due at next_ms, stored directly (as the api's TaskStore.create)."""
    for i in range(n):
        task_id = secrets.token_hex(8)
        spec = pb.Task(
            id=task_id,
            name=f"t{i}",
            schedule=pb.Schedule(cron=pb.CronSchedule(expression=YEARLY)),
            target=pb.Target(log=pb.LogTarget()),
        )
        assert await store.tasks.create(task_id, spec, pb.TaskState.TASK_STATE_ACTIVE, next_ms) is None


async def script_us(r: redis.asyncio.Redis) -> float:
    stats = await r.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec", 0))


def key_kind(key: bytes | str) -> str:
    """The key with its ids starred: ts:{0}:exec:* for every execution hash, say."""
    parts = (key.decode() if isinstance(key, bytes) else key).split(":")
    return ":".join("*" if len(p) >= 16 and any(c.isdigit() for c in p) else p for p in parts)


async def measure(url: str, n: int) -> dict[str, Any]:
    r = redisconn.from_url(url)
    store = Store(r)
    engine = store.engine
    nominal = (await store.now_ms() // 1000 - 1) * 1000
    await store_tasks(store, n, nominal)
    spent: dict[str, float] = {}

    async def timed(name: str, call: Awaitable[T]) -> T:
        before = await script_us(r)
        out = await call
        spent[name] = spent.get(name, 0.0) + await script_us(r) - before
        return out

    for _ in range(-(-n // BATCH)):
        now, due, _ = await timed("read", engine.read_due(BATCH))
        await timed("commit", engine.commit_fire([plan(t, now, 3_600_000) for t in due], now))
    ready = [m.decode() if isinstance(m, bytes) else str(m) for m in await r.zrange(store.keys.ready, 0, -1)]
    for start in range(0, len(ready), BATCH):
        items = await timed("lease", engine.lease_ready(BATCH, 60_000, ready[start : start + BATCH]))
        now = await store.now_ms()
        done = []
        for item in items:
            result = ipb.WorkResult(
                execution_id=item.execution.id, lease_token=item.token, status=SUCCEEDED, executor_id="x"
            )
            result.start_time.CopyFrom(ms_to_ts(now - 5))
            result.finish_time.CopyFrom(ms_to_ts(now))
            done.append(apply(item.execution, item.spec, result, now))
        await timed("complete", engine.complete(done, now, 20))
    stored: Counter[str] = Counter()
    for key in await r.keys("*"):
        stored[key_kind(key)] += await r.memory_usage(key, samples=0) or 0
    await r.aclose()
    return {
        "executions": n,
        "redis_us_per_execution": {k: round(v / n, 1) for k, v in spent.items()},
        "redis_us_per_execution_total": round(sum(spent.values()) / n, 1),
        "bytes_per_execution_by_key": {k: round(v / n, 1) for k, v in stored.most_common() if v >= n},
    }


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with redis_server() as server:
        out = asyncio.run(measure(server.url, n))
    for name, us in out["redis_us_per_execution"].items():
        print(f"{name:10s} {us:7.1f} us/execution")
    print(f"{'total':10s} {out['redis_us_per_execution_total']:7.1f} us/execution")
    for kind, size in out["bytes_per_execution_by_key"].items():
        print(f"{kind:32s} {size:8.1f} bytes per execution")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
