"""Execution history in Redis: one hash per execution, a per-task and a global index.

Both indexes are lexicographic sorted sets whose members sort by nominal time: a task's index
holds execution ids ("<task id>-<13-digit ms>..."), the global one "<13-digit ms>:<execution id>".
Listing newest-first is ZREVRANGEBYLEX from a cursor, and retention can trim from the members
alone, without reading a record.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from schedcore import pb, tracing
from schedcore.errors import FailedPrecondition, NotFound
from schedcore.settings import NamespaceQuota
from schedcore.store.audit import NO_AUDIT_ARGS, AuditEntry
from schedcore.store.keys import (
    DEFAULT_NAMESPACE,
    EXECUTION_ID,
    Partitions,
    history_member,
    pad_ms,
    task_of_execution,
)
from schedcore.store.keys import execution_id as occurrence_id
from schedcore.store.quotas import NOTHING, passed, share
from schedcore.store.scripts import Scripts
from schedcore.store.stats import minute_of
from schedcore.timeutil import ts_fields

_TERMINAL_ARGS = [str(int(s)) for s in sorted(pb.TERMINAL_STATUSES)]


@dataclass(frozen=True)
class Bounds:
    """A nominal-time window [start_ms, end_ms) of a listing; None means open."""

    start_ms: int | None = None
    end_ms: int | None = None


def decode(status: int, raw: bytes) -> pb.Execution:
    """An execution record; the hash's status field (which scripts set) wins over the record's."""
    execution = pb.Execution.FromString(raw)
    execution.status = status  # type: ignore[assignment]
    if not execution.namespace:  # recorded before namespaces existed, like its task
        execution.namespace = DEFAULT_NAMESPACE
    return execution


def new_record(
    spec: pb.Task, task_id: str, nominal_ms: int, fire_ms: int, status: int, trigger: int, suffix: str = ""
) -> pb.Execution:
    """A new execution's record: the occurrence's id (plus `suffix` for a manual run), attempt 1,
    and the task's namespace and payload copied in, so reading it needs no lookup of its task.
    The scheduler's plan, RunTask and BackfillTask all build them here."""
    record = pb.Execution(
        id=occurrence_id(task_id, nominal_ms, suffix),
        task_id=task_id,
        namespace=spec.namespace or DEFAULT_NAMESPACE,
        attempt=1,
        status=status,  # type: ignore[arg-type]
        trigger=trigger,  # type: ignore[arg-type]
        nominal_time=ts_fields(nominal_ms),
        fire_time=ts_fields(fire_ms),
    )
    if spec.HasField("payload"):
        record.payload.CopyFrom(spec.payload)
    if tracing.ENABLED and status == pb.ExecutionStatus.EXECUTION_STATUS_PENDING:
        tracing.stamp(record)  # a SKIPPED record never runs: no trace (docs/tracing.md)
    return record


def summary(execution: pb.Execution) -> pb.ExecutionSummary:
    result = pb.ExecutionSummary(execution_id=execution.id, status=execution.status)
    result.nominal_time.CopyFrom(execution.nominal_time)
    if execution.HasField("finish_time"):
        result.finish_time.CopyFrom(execution.finish_time)
    return result


class ExecutionStore:
    """Executions in every partition: each lives in its task's; the global listing and
    retention by age read them all."""

    def __init__(self, redis: Redis, partitions: Partitions, scripts: Scripts) -> None:
        self.redis = redis
        self.partitions = partitions
        self.scripts = scripts

    async def create(
        self,
        execution: pb.Execution,
        ready_at_ms: int,
        audit: AuditEntry | None = None,
        quota: NamespaceQuota | None = None,
        overlap: str = "",
        alert: str = "",
    ) -> str | None:
        """Record a new execution (and its audit event, when given) and queue it for dispatch:
        "run", or with an `overlap` rule ("<policy>:<limit>", engine.overlap_rule) what the rule
        made of it ("buffer", "skip"). None if that id already exists; NotFound if its task does
        not. With `quota` (a manual run), it counts against its namespace's runs in the minute of
        `ready_at_ms` (the store's clock): OverQuota past the limit, and nothing is written.
        `alert`: the task's alert rule (schedcore/store/alerts.py, rule_arg): a run created
        PENDING is watched for its late-start and running-long limits."""
        partition = self.partitions.of_task(execution.task_id)
        k = self.partitions.all[partition]
        minute = ready_at_ms // 60_000
        namespace = execution.namespace or DEFAULT_NAMESPACE
        full, used = quota, NOTHING
        if quota is not None:
            quota, used = await share(self.redis, self.partitions, partition, namespace, quota, minute)
        result = await self.scripts.execution_create(
            keys=[
                k.execution(execution.id),
                k.task(execution.task_id),
                k.task_history(execution.task_id),
                k.history,
                k.ready,
                k.audit,
                k.quota_runs(minute),
                k.task_active(execution.task_id),
                k.ready_command,
                k.minute_stats(minute_of(ready_at_ms)),
                k.alert_watch,
            ],
            args=[
                execution.id,
                execution.SerializeToString(),
                int(execution.status),
                history_member(execution.id),
                ready_at_ms,
                summary(execution).SerializeToString(),
                namespace if quota is not None else "",
                quota.max_runs_per_minute if quota is not None else 0,
                overlap,
                k.execution_prefix,
                alert,
                *(audit.args() if audit is not None else NO_AUDIT_ARGS),
            ],
        )
        if result[0] == b"missing":
            raise NotFound(f"task {execution.task_id!r} not found")
        if result[0] == b"quota":
            assert full is not None
            wait_s = 60 - (ready_at_ms % 60_000) // 1000
            raise passed("runs", namespace, full, used, int(result[2]), 1, "run", retry_s=wait_s)
        return result[1].decode() if result[0] == b"ok" else None

    async def cancel(
        self, execution_id: str, reason: str, now_ms: int, audit: AuditEntry | None = None
    ) -> str:
        """Cancel an execution (execution_cancel.lua): "cancelled" (it was PENDING: ended now),
        "requested" (RUNNING: its executor is told to stop it) or "cancelling" (asked before).
        NotFound without a record; FailedPrecondition once it has ended."""
        k = self.partitions.execution(execution_id)
        task_id = task_of_execution(execution_id)
        result = await self.scripts.execution_cancel(
            keys=[
                k.execution(execution_id),
                k.ready,
                k.ready_command,
                k.task(task_id),
                k.task_active(task_id),
                k.minute_stats(minute_of(now_ms)),
                k.audit,
            ],
            args=[
                execution_id,
                reason,
                k.execution_prefix,
                *(audit.args() if audit is not None else NO_AUDIT_ARGS),
            ],
        )
        outcome = str(result[0].decode())
        if outcome == "missing":
            raise NotFound(f"execution {execution_id!r} not found")
        if outcome == "ended":
            status = pb.ExecutionStatus.Name(int(result[1]))[len("EXECUTION_STATUS_") :]
            raise FailedPrecondition(f"execution {execution_id!r} has ended ({status}): nothing to cancel")
        return outcome

    async def create_missing(
        self,
        executions: Sequence[pb.Execution],
        ready_at_ms: int,
        overlap: str = "",
        in_flight: int = 8,
        alert: str = "",
    ) -> Counter[str]:
        """Record each execution whose id has no record yet and queue it (the create script of
        RunTask, without a quota: BackfillTask bounds its own count); `in_flight` calls at once
        (each holds a pooled connection, and the pool is bounded: a few, so that concurrent
        backfills leave room for every other call). With an `overlap` rule each is decided by
        it, one at a time and oldest first (each decision depends on the ones before).
        Returns how many were created, by what the rule made of them ("run", "buffer", "skip").
        NotFound when the task went away meanwhile."""
        made: Counter[str] = Counter()
        step = 1 if overlap else in_flight
        for start in range(0, len(executions), step):
            chunk = executions[start : start + step]
            done = await asyncio.gather(
                *(self.create(e, ready_at_ms, overlap=overlap, alert=alert) for e in chunk)
            )
            made.update(fate for fate in done if fate is not None)
        return made

    async def count_existing(self, execution_ids: Sequence[str]) -> int:
        """How many of these executions have a record (one pipelined EXISTS each)."""
        if not execution_ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for e in execution_ids:
                pipe.exists(self.partitions.execution(e).execution(e))
            return sum(await pipe.execute())

    async def get(self, execution_id: str) -> pb.Execution:
        row = await self.get_many([execution_id])
        if row[0] is None:
            raise NotFound(f"execution {execution_id!r} not found")
        return decode(*row[0])

    async def get_many(self, ids: Sequence[str]) -> list[tuple[int, bytes] | None]:
        """(status, record bytes) per id; None where the record is gone."""
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for execution_id in ids:
                pipe.hmget(self.partitions.execution(execution_id).execution(execution_id), ("status", "pb"))
            rows = await pipe.execute()
        return [(int(s), raw) if s is not None and raw is not None else None for s, raw in rows]

    async def scan(self, task_id: str | None, bounds: Bounds, before: str | None, count: int) -> list[str]:
        """Up to `count` execution ids, newest first, inside `bounds`, strictly older than the
        execution `before` (None: from the newest). Without a task, over every partition: history
        members are unique and order the same way in each, so `before` is the one cursor of all
        (as TaskStore.scan)."""
        if task_id is not None:
            prefix = f"{task_id}-"
            low = "[" + prefix + (pad_ms(bounds.start_ms) if bounds.start_ms is not None else "")
            high = "(" + (before or prefix + (pad_ms(bounds.end_ms) if bounds.end_ms is not None else "~"))
            index = self.partitions.task(task_id).task_history(task_id)
            members: list[bytes] = await self.redis.zrevrangebylex(index, high, low, start=0, num=count)  # type: ignore[assignment]
            return [m.decode() for m in members]
        low = "[" + pad_ms(bounds.start_ms) if bounds.start_ms is not None else "-"
        if before is not None:
            high = "(" + history_member(before)
        else:
            high = "(" + pad_ms(bounds.end_ms) if bounds.end_ms is not None else "+"
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys in self.partitions.all:
                pipe.zrevrangebylex(keys.history, high, low, start=0, num=count)
            runs: list[list[bytes]] = await pipe.execute()
        merged = runs[0] if len(runs) == 1 else heapq.merge(*runs, reverse=True)
        return [m.decode().split(":", 1)[1] for m in itertools.islice(merged, count)]

    async def trim_task(self, task_id: str, keep: int) -> int:
        """Retention by count: delete the task's terminal executions beyond the newest `keep`."""
        index = self.partitions.task(task_id).task_history(task_id)
        excess: list[bytes] = await self.redis.zrange(index, 0, -(keep + 1))  # type: ignore[assignment]
        return await self._delete([m.decode() for m in excess])

    async def trim_older_than(self, cutoff_ms: int, batch: int = 500) -> int:
        """Retention by age: delete terminal executions whose nominal time is before the cutoff.

        Walks the whole range in batches; executions still pending or running are stepped over,
        so they neither get deleted nor hold back the terminal ones behind them. One partition
        after the other."""
        total = 0
        for keys in self.partitions.all:
            kept = 0
            while True:
                members: list[bytes] = await self.redis.zrangebylex(  # type: ignore[assignment]
                    keys.history, "-", "(" + pad_ms(cutoff_ms), start=kept, num=batch
                )
                deleted = await self._delete([m.decode().split(":", 1)[1] for m in members])
                total += deleted
                kept += len(members) - deleted
                if len(members) < batch:
                    break
        return total

    async def _delete(self, ids: list[str]) -> int:
        """Delete the terminal ones of `ids`: one script per partition they are in."""
        by_partition: dict[int, list[str]] = defaultdict(list)
        for execution_id in ids:
            by_partition[self.partitions.of_execution(execution_id)].append(execution_id)
        deleted = 0
        for partition, some in sorted(by_partition.items()):
            deleted += await self._delete_in(partition, some)
        return deleted

    async def _delete_in(self, partition: int, ids: list[str]) -> int:
        k = self.partitions.all[partition]
        keys = [k.history]
        args: list[str | int] = [len(ids)]
        for execution_id in ids:
            match = EXECUTION_ID.match(execution_id)
            assert match, execution_id
            keys += [k.execution(execution_id), k.task_history(match.group(1))]
            args += [execution_id, history_member(execution_id)]
        args += _TERMINAL_ARGS
        return int(await self.scripts.execution_trim(keys=keys, args=args))
