"""BackfillTask (docs/scheduling.md, "Backfill"): executions for the occurrences of a past range of
a task's schedule that have no record. The ids are the occurrences' own (the ones the scheduler
gives them), and each is created by the create script only where no record exists, so a second
call over the same range, or two calls at once, create each occurrence once."""

from __future__ import annotations

from schedcore import pb
from schedcore.errors import InvalidArgument, Violations
from schedcore.schedule import Window
from schedcore.store.engine import overlap_arg
from schedcore.store.executions import new_record
from services.api import schedulecheck

# Most occurrences one call may cover: a bounded amount of work and of records per call.
MAX_BACKFILL = 10_000
BACKFILL = pb.ExecutionTrigger.EXECUTION_TRIGGER_BACKFILL
PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING


def occurrences(request: pb.BackfillTaskRequest, spec: pb.Task, now_ms: int) -> list[int]:
    """The fire times of the task's schedule in [start_time, end_time); INVALID_ARGUMENT naming
    the field for a range that is missing, reversed, in the future or over MAX_BACKFILL."""
    v = Violations()
    start = end = None
    for name in ("start_time", "end_time"):
        if not request.HasField(name):
            v.add(name, "required")
    if request.HasField("start_time"):
        start = schedulecheck.timestamp_ms(v, "start_time", request.start_time)
    if request.HasField("end_time"):
        end = schedulecheck.timestamp_ms(v, "end_time", request.end_time)
    if request.HasField("overlap"):
        schedulecheck.overlap(v, request.overlap, "overlap")
    if start is not None and end is not None and end <= start:
        v.add("end_time", "must be after start_time")
    elif end is not None and end > now_ms:
        v.add("end_time", "must not be after now: backfill fills the past (the scheduler fires the future)")
    v.raise_if_any()
    assert start is not None and end is not None
    window = Window.of(spec.schedule)
    times: list[int] = []
    current = start - 1
    while (found := window.next_after_ms(current)) is not None and found < end:
        if len(times) == MAX_BACKFILL:
            raise InvalidArgument.field(
                "end_time", f"the range holds more than {MAX_BACKFILL} occurrences: split it"
            )
        times.append(found)
        current = found
    return times


def overlap(request: pb.BackfillTaskRequest, spec: pb.Task) -> str:
    """The overlap rule the backfilled runs are decided by (execution_create.lua's form): the
    request's, else the task's (validated by occurrences())."""
    return overlap_arg(request.overlap if request.HasField("overlap") else spec.overlap)


def records(task_id: str, spec: pb.Task, times: list[int], now_ms: int) -> list[pb.Execution]:
    """The PENDING records a backfill creates for these fire times (where none exists)."""
    return [new_record(spec, task_id, nominal, now_ms, PENDING, BACKFILL) for nominal in times]
