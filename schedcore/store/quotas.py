"""Per-namespace quotas: how many tasks, how many bytes their stored specs take (payload, target
and all), and how many manual runs (RunTask) a minute. The counters live in hashes
(Keys.quota_tasks, Keys.quota_bytes, Keys.quota_runs) that the scripts check and move in the same
call as the write they bound (lua/prelude.lua), so concurrent writes through any number of api
replicas cannot pass a limit together.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from schedcore.errors import ResourceExhausted
from schedcore.settings import NamespaceQuota
from schedcore.store.keys import Keys

# The quota a script reports as passed, -> what the message calls it and its setting.
_NAMES = {
    "tasks": ("task quota", "NAMESPACE_MAX_TASKS"),
    "bytes": ("task bytes quota", "NAMESPACE_MAX_TASK_BYTES"),
    "runs": ("run quota", "NAMESPACE_MAX_RUNS_PER_MINUTE"),
}
NO_QUOTA = NamespaceQuota(0, 0, 0)


class OverQuota(ResourceExhausted):
    """A write would take a namespace past one of its quotas; nothing was written."""

    def __init__(
        self, which: str, namespace: str, limit: int, used: int, adding: int, verb: str, retry_s: int = 0
    ) -> None:
        name, setting = _NAMES[which]
        if which == "tasks":
            held = f"holds {used} tasks and may hold at most {limit}"
            more = "a task" if adding == 1 else f"{adding} tasks"
        elif which == "bytes":
            held = f"stores {used} bytes of tasks and may store at most {limit}"
            more = f"{adding} bytes"
        else:
            held = f"ran tasks {used} times this minute (RunTask) and may run them {limit} times a minute"
            more = "a run"
        super().__init__(
            f"{name} exceeded: namespace {namespace!r} {held} ({setting}); {more} more would pass "
            f"it, nothing was {verb}" + (f"; retry in {retry_s} s" if retry_s else "")
        )
        self.which = which
        self.namespace = namespace
        self.limit = limit


@dataclass(frozen=True)
class Usage:
    tasks: int
    task_bytes: int
    runs_this_minute: int


async def usage(redis: Redis, keys: Keys, now_ms: int) -> dict[str, Usage]:
    """Namespace -> what counts against its quotas now (namespaces with nothing counted are
    absent); runs are those of the minute of `now_ms` (the store's clock)."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in (keys.quota_tasks, keys.quota_bytes, keys.quota_runs(now_ms // 60_000)):
            pipe.hgetall(key)
        raw = await pipe.execute()
    tasks, sizes, runs = ({ns.decode(): max(0, int(n)) for ns, n in h.items()} for h in raw)
    return {
        ns: Usage(tasks.get(ns, 0), sizes.get(ns, 0), runs.get(ns, 0))
        for ns in tasks.keys() | sizes.keys() | runs.keys()
        if tasks.get(ns, 0) or sizes.get(ns, 0) or runs.get(ns, 0)
    }
