"""Per-namespace quotas on what tasks hold in Redis: how many tasks, and how many bytes their
stored specs take (payload, target and all). The counters live in two hashes (Keys.quota_tasks,
Keys.quota_bytes) that the task scripts check and move in the same call as the write they bound
(lua/prelude.lua), so concurrent writes through any number of api replicas cannot pass a limit.
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
}
NO_QUOTA = NamespaceQuota(0, 0)


class OverQuota(ResourceExhausted):
    """A write would take a namespace past one of its quotas; nothing was written."""

    def __init__(self, which: str, namespace: str, limit: int, used: int, adding: int, verb: str) -> None:
        name, setting = _NAMES[which]
        if which == "tasks":
            held = f"holds {used} tasks and may hold at most {limit}"
            more = "a task" if adding == 1 else f"{adding} tasks"
        else:
            held = f"stores {used} bytes of tasks and may store at most {limit}"
            more = f"{adding} bytes"
        super().__init__(
            f"{name} exceeded: namespace {namespace!r} {held} ({setting}); {more} more would pass "
            f"it, nothing was {verb}"
        )
        self.which = which
        self.namespace = namespace
        self.limit = limit


@dataclass(frozen=True)
class Usage:
    tasks: int
    task_bytes: int


async def usage(redis: Redis, keys: Keys) -> dict[str, Usage]:
    """Namespace -> what counts against its quotas (namespaces with nothing counted are absent)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.quota_tasks)
        pipe.hgetall(keys.quota_bytes)
        tasks, sizes = await pipe.execute()
    counts = {ns.decode(): int(n) for ns, n in tasks.items()}
    stored = {ns.decode(): int(n) for ns, n in sizes.items()}
    return {
        ns: Usage(max(0, counts.get(ns, 0)), max(0, stored.get(ns, 0)))
        for ns in counts.keys() | stored.keys()
        if counts.get(ns, 0) > 0 or stored.get(ns, 0) > 0
    }
