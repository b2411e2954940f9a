"""What firing a due occurrence means: which records to write and where the task goes next.

Catch-up (docs/guarantees.md, promise 6; docs/engine.md, "Policies"): an occurrence found more
than MISSED_TOLERANCE_SECONDS after its nominal time means the suite was not running across it.
The task's catch-up policy then decides which of the occurrences from it up to now run (default:
the earliest); every other one is recorded SKIPPED with its reason (at most MAX_SKIPPED_RECORDS
of them, so a long outage of a busy cron task does not flood the history; the reason says when
there were more), and the task continues from its next occurrence after now. Never a silent gap,
never a flood.
"""

from __future__ import annotations

from schedcore import pb
from schedcore.schedule import Window, jitter_ms
from schedcore.store.engine import DueTask, FireCommit
from schedcore.store.executions import new_record
from schedcore.timeutil import duration_to_ms, ms_to_ts

MAX_SKIPPED_RECORDS = 100
# RUN_ALL's limit when the task names none.
DEFAULT_CATCH_UP_LIMIT = 10
ACTIVE = pb.TaskState.TASK_STATE_ACTIVE
COMPLETED = pb.TaskState.TASK_STATE_COMPLETED
# Looked up once: an enum value read through its wrapper costs a microsecond per item.
PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
SKIPPED = pb.ExecutionStatus.EXECUTION_STATUS_SKIPPED
SCHEDULE = pb.ExecutionTrigger.EXECUTION_TRIGGER_SCHEDULE
SKIP_ALL = pb.CatchUpPolicy.CATCH_UP_POLICY_SKIP_ALL
RUN_LATEST = pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_LATEST
RUN_ALL = pb.CatchUpPolicy.CATCH_UP_POLICY_RUN_ALL


def _record(task: DueTask, nominal_ms: int, now_ms: int, status: int) -> pb.Execution:
    return new_record(task.spec, task.task_id, nominal_ms, now_ms, status, SCHEDULE)


def plan(task: DueTask, now_ms: int, tolerance_ms: int) -> FireCommit:
    nominal = task.nominal_ms
    w = Window.of(task.spec.schedule)
    if now_ms - nominal <= tolerance_ms:
        records = [_record(task, nominal, now_ms, PENDING)]
        following = w.next_after_ms(nominal)
    else:
        records = _caught_up(task, w, now_ms)
        following = w.next_after_ms(now_ms)
    state = ACTIVE if following is not None else COMPLETED
    if not task.spec.HasField("max_jitter") or records[0].status != PENDING:
        return FireCommit(task, records, following, state, ready_at_ms=now_ms)
    # Jitter: the runs are recorded now and wait in ready until their planned start.
    max_ms = duration_to_ms(task.spec.max_jitter)
    ready_at = now_ms
    for run in records:
        if run.status == PENDING:
            nominal_ms = run.nominal_time.ToMilliseconds()
            planned = nominal_ms + jitter_ms(task.task_id, nominal_ms, max_ms)
            run.planned_time.CopyFrom(ms_to_ts(planned))
            ready_at = max(ready_at, planned)
    return FireCommit(task, records, following, state, ready_at_ms=ready_at, waits=ready_at > now_ms)


def _runs(w: Window, policy: int, limit: int, low_ms: int, now_ms: int) -> list[int]:
    """The late occurrences in [low_ms, now_ms] that run under `policy`, oldest first."""
    if policy == SKIP_ALL:
        return []
    if policy == RUN_LATEST:
        latest = w.last_in(low_ms, now_ms)
        return [] if latest is None else [latest]
    runs: list[int] = []
    current = low_ms - 1
    while len(runs) < (limit if policy == RUN_ALL else 1):
        found = w.next_after_ms(current)
        if found is None or found > now_ms:
            break
        runs.append(found)
        current = found
    return runs


def _caught_up(task: DueTask, w: Window, now_ms: int) -> list[pb.Execution]:
    """The records of a task found late: its runs first (oldest first), then a SKIPPED record
    for each of the first MAX_SKIPPED_RECORDS other occurrences up to now, with the reason."""
    catch_up = task.spec.catch_up
    policy = catch_up.policy
    window_ms = duration_to_ms(catch_up.window) if catch_up.HasField("window") else 0
    low = max(task.nominal_ms, now_ms - window_ms) if window_ms else task.nominal_ms
    limit = catch_up.limit or DEFAULT_CATCH_UP_LIMIT
    run_times = _runs(w, policy, limit, low, now_ms)
    records = [_record(task, ms, now_ms, PENDING) for ms in run_times]
    ran = set(run_times)
    why = {
        SKIP_ALL: "the catch-up policy runs none of them",
        RUN_LATEST: "the catch-up policy runs the latest",
        RUN_ALL: f"the catch-up policy runs every one, up to {limit}",
    }.get(policy, "the catch-up policy runs the earliest")
    runs_text = ", as " + ", ".join(r.id for r in records) if records else ""
    skipped: list[pb.Execution] = []
    current, more = task.nominal_ms - 1, False
    while True:
        found = w.next_after_ms(current)
        if found is None or found > now_ms:
            break
        current = found
        if found in ran:
            continue
        if len(skipped) == MAX_SKIPPED_RECORDS:
            more = True
            break
        outside = found < low
        record = _record(task, found, now_ms, SKIPPED)
        record.attempt = 0
        record.finish_time.CopyFrom(ms_to_ts(now_ms))
        record.status_message = (
            "missed: the scheduler was not running at this time; "
            + (f"older than the catch-up window of {window_ms // 1000} s" if outside else why)
            + runs_text
        )
        skipped.append(record)
    if more:
        for record in skipped:
            record.status_message += f" (only the first {MAX_SKIPPED_RECORDS} skipped are recorded)"
    # The stored next time is always an occurrence of the schedule, so something was found; were
    # it not, the occurrence still runs rather than vanish.
    return records + skipped or [_record(task, task.nominal_ms, now_ms, PENDING)]
