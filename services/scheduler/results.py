"""Turning executors' results into records: retries with backoff, final states, fencing.

Any scheduler replica records any result: what it needs (the record, the task's retry policy) is
read from Redis, and the dispatch_complete script drops results whose lease token is stale. An
execution is recorded in its own partition (the one its task id names): a batch spanning
partitions is one call per partition touched (services/scheduler/partitioned.py).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence

from schedcore import ipb, metrics, pb, tracing
from schedcore.errors import Aborted, NotFound
from schedcore.settings import Settings
from schedcore.store import Store
from schedcore.store.alerts import rule_arg
from schedcore.store.audit import Actor, AuditEntry
from schedcore.store.engine import Completed, Completion, DispatchItem, EngineStore, Renewed
from schedcore.store.executions import summary
from schedcore.store.keys import DEFAULT_NAMESPACE
from schedcore.timeutil import duration_to_ms, ms_to_duration, ms_to_ts, ts_to_ms
from services.scheduler.partitioned import per_partition
from services.scheduler.taskmetrics import TaskMetrics

log = logging.getLogger("scheduler.results")

PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
CANCELLED = pb.ExecutionStatus.EXECUTION_STATUS_CANCELLED
ACTIVE = pb.TaskState.TASK_STATE_ACTIVE
PAUSED = pb.TaskState.TASK_STATE_PAUSED
# What an executor may report: an end of an attempt, or PENDING for work handed back unrun.
REPORTABLE = {
    PENDING,
    SUCCEEDED,
    CANCELLED,
    pb.ExecutionStatus.EXECUTION_STATUS_FAILED,
    pb.ExecutionStatus.EXECUTION_STATUS_TIMED_OUT,
}


def backoff_ms(policy: pb.RetryPolicy, failed_attempt: int) -> int:
    """Delay before the attempt after `failed_attempt` (1-based): exponential, capped."""
    initial = duration_to_ms(policy.initial_backoff) or 1000
    cap = duration_to_ms(policy.max_backoff) or 60_000
    multiplier = policy.backoff_multiplier or 2.0
    return int(min(cap, initial * multiplier ** (failed_attempt - 1)))


def apply(record: pb.Execution, spec: pb.Task | None, result: ipb.WorkResult, now_ms: int) -> Completion:
    """The record after an attempt ended, and whether (and when) it runs again."""
    out = pb.Execution()
    out.CopyFrom(record)
    out.executor = result.executor_id
    out.status_message = result.status_message
    if result.status not in REPORTABLE:  # a buggy executor must not leave the record in limbo
        bad = (
            pb.ExecutionStatus.Name(result.status)
            if result.status in pb.ExecutionStatus.values()
            else result.status
        )
        fixed = ipb.WorkResult()
        fixed.CopyFrom(result)
        fixed.status = pb.ExecutionStatus.EXECUTION_STATUS_FAILED
        fixed.status_message = f"executor reported an invalid status {bad}"
        fixed.retryable = True
        result = fixed
    if result.status == PENDING:  # handed back unrun: queue again, no attempt counted
        out.status = PENDING
        return Completion(out, result.lease_token, now_ms, None)
    out.result.CopyFrom(result.result)
    out.start_time.CopyFrom(result.start_time)
    out.finish_time.CopyFrom(result.finish_time)
    start, finish = ts_to_ms(result.start_time), ts_to_ms(result.finish_time)
    out.duration.CopyFrom(ms_to_duration(max(0, finish - start)))
    planned = record.planned_time if record.HasField("planned_time") else record.nominal_time
    out.lag.CopyFrom(ms_to_duration(max(0, start - ts_to_ms(planned))))
    out.status = result.status
    policy = spec.retry_policy if spec is not None else pb.RetryPolicy(max_attempts=1)
    retry = result.status not in (SUCCEEDED, CANCELLED) and result.retryable
    if retry and record.attempt < policy.max_attempts:
        retry_at = now_ms + backoff_ms(policy, record.attempt)
        out.status = PENDING
        out.attempt = record.attempt + 1
        out.ClearField("finish_time")
        out.status_message = (
            f"attempt {record.attempt} {pb.ExecutionStatus.Name(result.status)[17:].lower()}: "
            f"{result.status_message}; attempt {out.attempt} at {ms_to_ts(retry_at).ToJsonString()}"
        )
        return Completion(out, result.lease_token, retry_at, summary(out))
    if spec is None:
        return Completion(out, result.lease_token, None, summary(out))
    alert = rule_arg(spec.alerts, spec.namespace or DEFAULT_NAMESPACE)
    return Completion(out, result.lease_token, None, summary(out), spec.pause_after_failures, alert)


def count(recorded: Sequence[tuple[pb.Execution, Completion]]) -> None:
    """Metrics of recorded results (the record before, the completion): final statuses and
    retries counted once per batch; the lag of each first attempt that ran, per execution."""
    finished: Counter[int] = Counter()
    retries = 0
    for before, completion in recorded:
        after = completion.execution
        if after.status == PENDING and after.attempt == before.attempt:
            continue  # handed back unrun: not an attempt
        if completion.retry_at_ms is None:
            finished[after.status] += 1
        else:
            retries += 1
        if before.attempt == 1:
            metrics.EXECUTION_LAG.observe(duration_to_ms(after.lag) / 1000)
    for status, n in finished.items():
        metrics.EXECUTIONS_FINISHED.labels(metrics.status_label(pb.ExecutionStatus.Name(status))).inc(n)
    if retries:
        metrics.EXECUTION_RETRIES.inc(retries)


class Recorder:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.lease_ms = int(settings.lease_s * 1000)
        self.task_metrics = TaskMetrics(settings.task_metrics_max)

    async def record(
        self, results: Sequence[ipb.WorkResult], known: Mapping[str, DispatchItem] | None = None
    ) -> int:
        """Record results. `known`: what this replica dispatched, by execution id; a result
        whose record and task it holds (same lease token) needs no read from Redis."""
        if not results:
            return 0
        started_ns = time.time_ns()
        now = await self.store.now_ms()
        known = known or {}
        current: list[tuple[pb.Execution | None, pb.Task | None]] = []
        unknown = []
        for r in results:
            item = known.get(r.execution_id)
            if item is not None and item.token == r.lease_token and item.spec is not None:
                current.append((item.execution, item.spec))
            else:
                current.append((None, None))
                unknown.append(len(current) - 1)
        if unknown:
            read = await self.records([results[i].execution_id for i in unknown])
            for i, pair in zip(unknown, read, strict=True):
                current[i] = pair
        applied = [
            (record, spec, apply(record, spec, result, now))
            for result, (record, spec) in zip(results, current, strict=True)
            if record is not None
        ]
        done = await self.complete([c for _, _, c in applied], now, self.settings.history_max_per_task)
        ok = [row for row, flag in zip(applied, done.recorded, strict=True) if flag]
        count([(record, c) for record, _, c in ok])
        self.task_metrics.observe((record, c.execution, spec) for record, spec, c in ok if spec is not None)
        if tracing.ENABLED:
            tracing.recorded([(record, c) for record, _, c in applied], done.recorded, started_ns)
        recorded = done.count
        if recorded < len(results):
            log.info("dropped %d stale results (their lease had moved on)", len(results) - recorded)
        for task_id in done.over_limit:
            await self.store.executions.trim_task(task_id, self.settings.history_max_per_task)
        for task_id, failures, execution_id in done.failing:
            await self.pause_failing(task_id, failures, execution_id)
        return recorded

    async def pause_failing(self, task_id: str, failures: int, execution_id: str) -> None:
        """Pause a task whose executions failed `failures` times in a row (pause_after_failures),
        with its reason and an audit event, by the same compare-and-set as PauseTask. A task
        paused, resumed or changed meanwhile is left alone: if it fails again it is named again."""
        try:
            stored = await self.store.tasks.get(task_id)
        except NotFound:
            return
        if stored.state != ACTIVE:
            return
        reason = f"paused after {failures} failed executions in a row (the last: {execution_id})"
        audit = AuditEntry.of(
            self.settings.audit_max_events,
            pb.AuditAction.AUDIT_ACTION_PAUSE_TASK,
            Actor(name="scheduler"),
            namespace=stored.namespace,
            task_id=task_id,
            execution_id=execution_id,
            reason=reason,
        )
        try:
            await self.store.tasks.write(
                task_id, stored.rev, state=PAUSED, next_ms=None, audit=audit, reason=reason
            )
        except (Aborted, NotFound):
            return
        metrics.TASKS_PAUSED_BY_FAILURES.inc()
        log.warning("task %s %s", task_id, reason)

    async def records(self, ids: Sequence[str]) -> list[tuple[pb.Execution | None, pb.Task | None]]:
        """Current record and task spec of each execution, read in its partition."""
        out: list[tuple[pb.Execution | None, pb.Task | None]] = [(None, None)] * len(ids)
        for at, rows in await per_partition(self.store, ids, lambda e, at: e.records([ids[i] for i in at])):
            for i, row in zip(at, rows, strict=True):
                out[i] = row
        return out

    async def complete(
        self, completions: Sequence[Completion], now_ms: int, history_limit: int = 0
    ) -> Completed:
        """EngineStore.complete, each completion in its execution's partition: one script call
        per partition touched, the flags in the order given."""

        def call(engine: EngineStore, at: list[int]) -> Awaitable[Completed]:
            return engine.complete([completions[i] for i in at], now_ms, history_limit)

        recorded = [False] * len(completions)
        over: list[str] = []
        failing: list[tuple[str, int, str]] = []
        for at, done in await per_partition(self.store, [c.execution.id for c in completions], call):
            for i, flag in zip(at, done.recorded, strict=True):
                recorded[i] = flag
            over += done.over_limit
            failing += done.failing
        return Completed(recorded, over, failing)

    async def renew(self, renewals: Sequence[ipb.LeaseRenewal]) -> Renewed:
        """Extend leases, each in its partition: how many, and those being cancelled."""
        leases = [(r.execution_id, r.lease_token) for r in renewals]

        def call(engine: EngineStore, at: list[int]) -> Awaitable[Renewed]:
            return engine.renew([leases[i] for i in at], self.lease_ms)

        done = [r for _, r in await per_partition(self.store, [i for i, _ in leases], call)]
        return Renewed(sum(r.count for r in done), [c for r in done for c in r.cancels])

    async def hand_back(self, items: Sequence[tuple[pb.Execution, int]], now_ms: int) -> None:
        """Executions leased for dispatch that no executor received: ready again at once."""
        completions = []
        for record, token in items:
            out = pb.Execution()
            out.CopyFrom(record)
            out.status = PENDING
            completions.append(Completion(out, token, now_ms, None))
        await self.complete(completions, now_ms)

    async def cancel_orphans(self, items: Sequence[tuple[pb.Execution, int]], now_ms: int) -> None:
        """End executions whose task was deleted before they could run."""
        await self._end(items, now_ms, CANCELLED, "cancelled: the task was deleted before this execution ran")

    async def fail_lost(self, leases: Sequence[tuple[str, int]], now_ms: int, reason: str) -> None:
        """End FAILED the executions reclaim found lost too often (leased to us for this)."""
        records = await self.records([i for i, _ in leases])
        items = [(r, token) for (r, _), (_, token) in zip(records, leases, strict=True) if r is not None]
        await self._end(items, now_ms, pb.ExecutionStatus.EXECUTION_STATUS_FAILED, reason)

    async def end_cancelled(self, leases: Sequence[tuple[str, int, str]], now_ms: int) -> None:
        """End CANCELLED the executions being cancelled whose lease ran out before their executor
        stopped them (reclaim leased them to us for this)."""
        records = await self.records([i for i, _, _ in leases])
        for (record, _), (_, token, reason) in zip(records, leases, strict=True):
            if record is not None:
                await self._end([(record, token)], now_ms, CANCELLED, f"cancelled: {reason}")

    async def _end(
        self, items: Sequence[tuple[pb.Execution, int]], now_ms: int, status: int, reason: str
    ) -> None:
        completions = []
        for record, token in items:
            out = pb.Execution()
            out.CopyFrom(record)
            out.status = status  # type: ignore[assignment]
            out.status_message = reason
            out.finish_time.CopyFrom(ms_to_ts(now_ms))
            completions.append(Completion(out, token, None, summary(out)))
        recorded = (await self.complete(completions, now_ms)).count
        label = metrics.status_label(pb.ExecutionStatus.Name(status))
        metrics.EXECUTIONS_FINISHED.labels(label).inc(recorded)
