"""GetStats: the counters of schedcore/store/stats.py shaped into a response."""

from __future__ import annotations

from schedcore import pb
from schedcore.settings import Settings
from schedcore.store import Store, quotas
from schedcore.store.stats import MAX_MINUTES, MINUTE_MS, MinuteStats, minute_of, percentile_ms
from schedcore.timeutil import ms_to_duration, ms_to_ts
from services.api import validation

NOTHING = quotas.NOTHING


def _counts(statuses: dict[int, int]) -> list[pb.ExecutionStatusCount]:
    return [
        pb.ExecutionStatusCount(status=status, count=count)  # type: ignore[arg-type]
        for status, count in sorted(statuses.items())
        if count > 0
    ]


async def get_stats(store: Store, request: pb.GetStatsRequest, settings: Settings) -> pb.GetStatsResponse:
    minutes, width = validation.stats_window(request, MAX_MINUTES)
    now = await store.now_ms()
    first = minute_of(now) - minutes + 1
    tasks, per_minute, pending, running = await store.stats.read(first, minutes)
    out = pb.GetStatsResponse(
        start_time=ms_to_ts(first * MINUTE_MS),
        end_time=ms_to_ts((first + minutes) * MINUTE_MS),
        pending_executions=pending,
        running_executions=running,
    )
    for state in pb.TaskState.values():
        if state != pb.TaskState.TASK_STATE_UNSPECIFIED:
            out.tasks.add(state=state, count=tasks.get(state, 0))
    total = MinuteStats()
    for start in range(0, minutes, width):
        bucket = MinuteStats()
        for minute in per_minute[start : start + width]:
            bucket.add(minute)
        total.add(bucket)
        out.buckets.add(start_time=ms_to_ts((first + start) * MINUTE_MS), counts=_counts(bucket.statuses))
    out.executions.extend(_counts(total.statuses))
    counted = await quotas.usage(store.redis, store.partitions, now)
    for namespace in sorted(counted.keys() | settings.quota_namespaces()):
        used = counted.get(namespace, NOTHING)
        limits = settings.quota(namespace)
        out.namespaces.add(
            namespace=namespace,
            tasks=used.tasks,
            max_tasks=limits.max_tasks,
            task_bytes=used.task_bytes,
            max_task_bytes=limits.max_task_bytes,
            runs_this_minute=used.runs_this_minute,
            max_runs_per_minute=limits.max_runs_per_minute,
        )
    out.lag.count = sum(total.lag)
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        ms = percentile_ms(total.lag, q)
        if ms is not None:
            getattr(out.lag, name).CopyFrom(ms_to_duration(ms))
    return out


async def list_total(store: Store, request: pb.ListTasksRequest, namespace: str) -> int | None:
    """ListTasksResponse.total_size: how many tasks match `request` when the store's counters
    say it without reading them (every namespace, a state filter at most); None otherwise.
    Labels and names have no index to count by: a count would read every task, on every page."""
    if namespace or request.labels or request.name_contains:
        return None
    return await store.stats.task_total(request.state)
