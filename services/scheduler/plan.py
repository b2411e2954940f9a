"""What firing a due occurrence means: which records to write and where the task goes next.

Missed-time policy (docs/guarantees.md, promise 6): when an occurrence is found more than
MISSED_TOLERANCE_SECONDS after its nominal time, the suite was not running across it. The task
then runs once, for that first missed occurrence; the occurrences after it up to now are
recorded as SKIPPED with the reason (at most MAX_SKIPPED_RECORDS of them, so a long outage of a
busy cron task does not flood the history), and the task continues from its next occurrence
after now. Never a silent gap, never a flood.
"""

from __future__ import annotations

from schedcore import pb
from schedcore.schedule import Window, jitter_ms
from schedcore.store.engine import DueTask, FireCommit
from schedcore.store.keys import DEFAULT_NAMESPACE, execution_id
from schedcore.timeutil import duration_to_ms, ms_to_ts, ts_fields

MAX_SKIPPED_RECORDS = 100
ACTIVE = pb.TaskState.TASK_STATE_ACTIVE
COMPLETED = pb.TaskState.TASK_STATE_COMPLETED
# Looked up once: an enum value read through its wrapper costs a microsecond per item.
PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
SKIPPED = pb.ExecutionStatus.EXECUTION_STATUS_SKIPPED
SCHEDULE = pb.ExecutionTrigger.EXECUTION_TRIGGER_SCHEDULE


def _record(task: DueTask, nominal_ms: int, now_ms: int, status: int) -> pb.Execution:
    record = pb.Execution(
        id=execution_id(task.task_id, nominal_ms),
        task_id=task.task_id,
        # Copied from the task, so reading an execution needs no lookup of its task.
        namespace=task.spec.namespace or DEFAULT_NAMESPACE,
        attempt=1,
        status=status,  # type: ignore[arg-type]
        trigger=SCHEDULE,
        nominal_time=ts_fields(nominal_ms),
        fire_time=ts_fields(now_ms),
    )
    if task.spec.HasField("payload"):
        record.payload.CopyFrom(task.spec.payload)
    return record


def plan(task: DueTask, now_ms: int, tolerance_ms: int) -> FireCommit:
    nominal = task.nominal_ms
    w = Window.of(task.spec.schedule)
    run = _record(task, nominal, now_ms, PENDING)
    records = [run]
    if now_ms - nominal <= tolerance_ms:
        following = w.next_after_ms(nominal)
    else:
        current = nominal
        while len(records) <= MAX_SKIPPED_RECORDS:
            missed = w.next_after_ms(current)
            if missed is None or missed > now_ms:
                break
            skipped = _record(task, missed, now_ms, SKIPPED)
            skipped.attempt = 0
            skipped.finish_time.CopyFrom(ms_to_ts(now_ms))
            records.append(skipped)
            current = missed
        if len(records) > 1:
            beyond = w.next_after_ms(current)
            more = " (only the first 100 are recorded)" if beyond is not None and beyond <= now_ms else ""
            reason = (
                f"missed: the scheduler was not running at this time; under the missed-time "
                f"policy the task ran once for the window, as {run.id}{more}"
            )
            for skipped in records[1:]:
                skipped.status_message = reason
        following = w.next_after_ms(now_ms)
    state = ACTIVE if following is not None else COMPLETED
    if not task.spec.HasField("max_jitter"):
        return FireCommit(task, records, following, state, ready_at_ms=now_ms)
    # Jitter: the run is recorded now and waits in ready until its planned start.
    planned = nominal + jitter_ms(task.task_id, nominal, duration_to_ms(task.spec.max_jitter))
    run.planned_time.CopyFrom(ms_to_ts(planned))
    waits = planned > now_ms
    return FireCommit(task, records, following, state, ready_at_ms=max(now_ms, planned), waits=waits)
