"""Per-task metrics (docs/metrics.md, "Per-task metrics"): the lag and final statuses of the
executions of tasks with `export_metrics`, labelled with the task id.

The cardinality is bounded: a replica exports the series of at most TASK_METRICS_MAX tasks, the
first it records results of; results of the others are counted in
tasksched_task_metrics_dropped_total, so a full table is visible. A task admitted stays until the
process restarts (its series would otherwise come and go with each scrape), whatever its
export_metrics says later; its name in tasksched_task_info follows renames.
"""

from __future__ import annotations

from collections.abc import Iterable

from schedcore import metrics, pb
from schedcore.store.keys import DEFAULT_NAMESPACE
from schedcore.timeutil import duration_to_ms

PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING


class TaskMetrics:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._names: dict[str, tuple[str, str]] = {}  # admitted task id -> (name, namespace)

    def _admitted(self, spec: pb.Task) -> bool:
        task_id = spec.id
        named = (spec.name, spec.namespace or DEFAULT_NAMESPACE)
        known = self._names.get(task_id)
        if known is None:
            if len(self._names) >= self.limit:
                return False
            self._names[task_id] = named
            metrics.TASK_INFO.labels(task_id, *named).set(1)
        elif known != named:  # renamed: the info series follows
            metrics.TASK_INFO.remove(task_id, *known)
            metrics.TASK_INFO.labels(task_id, *named).set(1)
            self._names[task_id] = named
        return True

    def observe(self, recorded: Iterable[tuple[pb.Execution, pb.Execution, pb.Task]]) -> None:
        """(record before, record after, task) of results just recorded: the first attempts'
        lag and the final statuses of tasks that export metrics."""
        dropped = 0
        for before, after, spec in recorded:
            if not spec.export_metrics:
                continue
            handed_back = after.status == PENDING and after.attempt == before.attempt
            final = after.status != PENDING
            if handed_back or not (final or before.attempt == 1):
                continue
            if not self._admitted(spec):
                dropped += 1
                continue
            if before.attempt == 1:
                metrics.TASK_LAG.labels(spec.id).observe(duration_to_ms(after.lag) / 1000)
            if final:
                status = metrics.status_label(pb.ExecutionStatus.Name(after.status))
                metrics.TASK_FINISHED.labels(spec.id, status).inc()
        if dropped:
            metrics.TASK_METRICS_DROPPED.inc(dropped)
