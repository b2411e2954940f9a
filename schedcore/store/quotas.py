"""Per-namespace quotas: how many tasks, how many bytes their stored specs take (payload, target
and all), and how many manual runs (RunTask, RerunExecution) a minute. The counters live in hashes
(Keys.quota_tasks, Keys.quota_bytes, Keys.quota_runs) that the scripts check and move in the same
call as the write they bound (lua/prelude.lua), so concurrent writes through any number of api
replicas cannot pass a limit together.

With several partitions each has its own counters: a write's script checks its partition's
counter against the limit less what the other partitions count, read just before (share). Exact
with one partition; with more, creates racing in other partitions can pass a limit by at most
their number (docs/partitions.md, "Quotas across partitions").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from schedcore.errors import ResourceExhausted
from schedcore.settings import NamespaceQuota
from schedcore.store.keys import Partitions

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
            held = (
                f"ran tasks {used} times this minute (RunTask, RerunExecution) and may run them "
                f"{limit} times a minute"
            )
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


NOTHING = Usage(0, 0, 0)


def passed(
    which: str,
    namespace: str,
    quota: NamespaceQuota,
    elsewhere: Usage,
    used_here: int,
    adding: int,
    verb: str,
    retry_s: int = 0,
) -> OverQuota:
    """The error for a script's "quota" reply about `which`: the namespace's whole limit, and
    what it holds in every partition (`used_here` in the script's, `elsewhere` in the others)."""
    limit, other = {
        "tasks": (quota.max_tasks, elsewhere.tasks),
        "bytes": (quota.max_task_bytes, elsewhere.task_bytes),
        "runs": (quota.max_runs_per_minute, elsewhere.runs_this_minute),
    }[which]
    return OverQuota(which, namespace, limit, used_here + other, adding, verb, retry_s)


async def elsewhere(
    redis: Redis, partitions: Partitions, partition: int, namespaces: Iterable[str], minute: int | None = None
) -> dict[str, Usage]:
    """Namespace -> what the partitions other than `partition` count against its quotas (runs:
    in `minute`, when given). One pipeline; no call at all with one partition."""
    names = sorted(set(namespaces))
    others = [keys for p, keys in enumerate(partitions.all) if p != partition]
    if not others or not names:
        return dict.fromkeys(names, NOTHING)
    async with redis.pipeline(transaction=False) as pipe:
        for keys in others:
            for key in (
                keys.quota_tasks,
                keys.quota_bytes,
                *([keys.quota_runs(minute)] if minute is not None else []),
            ):
                pipe.hmget(key, names)
        raw = await pipe.execute()
    per = 3 if minute is not None else 2
    totals = {name: [0, 0, 0] for name in names}
    for i, row in enumerate(raw):
        for name, value in zip(names, row, strict=True):
            totals[name][i % per] += max(0, int(value or 0))
    return {name: Usage(*t) for name, t in totals.items()}


def _room(limit: int, used_elsewhere: int) -> int:
    """The limit a partition's script checks: 0 stays "no limit", and no room left is -1 (a
    script's 0 would mean no limit)."""
    if limit == 0:
        return 0
    return limit - used_elsewhere if limit > used_elsewhere else -1


def less(quota: NamespaceQuota, used: Usage) -> NamespaceQuota:
    """`quota` less what other partitions use: what one partition's script may still fill."""
    return NamespaceQuota(
        _room(quota.max_tasks, used.tasks),
        _room(quota.max_task_bytes, used.task_bytes),
        _room(quota.max_runs_per_minute, used.runs_this_minute),
    )


async def share(
    redis: Redis,
    partitions: Partitions,
    partition: int,
    namespace: str,
    quota: NamespaceQuota,
    minute: int | None = None,
) -> tuple[NamespaceQuota, Usage]:
    """(the quota `partition`'s script checks, what the other partitions use) for one write."""
    if quota == NO_QUOTA or partitions.count == 1:
        return quota, NOTHING
    used = (await elsewhere(redis, partitions, partition, [namespace], minute))[namespace]
    return less(quota, used), used


async def usage(redis: Redis, partitions: Partitions, now_ms: int) -> dict[str, Usage]:
    """Namespace -> what counts against its quotas now, over every partition (namespaces with
    nothing counted are absent); runs are those of the minute of `now_ms` (the store's clock)."""
    async with redis.pipeline(transaction=False) as pipe:
        for keys in partitions.all:
            for key in (keys.quota_tasks, keys.quota_bytes, keys.quota_runs(now_ms // 60_000)):
                pipe.hgetall(key)
        raw = await pipe.execute()
    tasks: dict[str, int] = {}
    sizes: dict[str, int] = {}
    runs: dict[str, int] = {}
    for i, h in enumerate(raw):
        into = (tasks, sizes, runs)[i % 3]
        for ns, n in h.items():
            into[ns.decode()] = into.get(ns.decode(), 0) + max(0, int(n))
    return {
        ns: Usage(tasks.get(ns, 0), sizes.get(ns, 0), runs.get(ns, 0))
        for ns in tasks.keys() | sizes.keys() | runs.keys()
        if tasks.get(ns, 0) or sizes.get(ns, 0) or runs.get(ns, 0)
    }
