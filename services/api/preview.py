"""PreviewSchedule: the next fire times of a schedule, and with a task's id and max_jitter the
planned start of each (docs/scheduling.md, "Jitter"). Creates nothing."""

from __future__ import annotations

from schedcore import pb
from schedcore.errors import Violations
from schedcore.schedule import jitter_ms
from schedcore.timeutil import MAX_MS, ms_to_ts, ts_to_ms
from services.api import schedulecheck, validation


def preview(request: pb.PreviewScheduleRequest, now_ms: int) -> pb.PreviewScheduleResponse:
    count = validation.preview_count(request.count)
    v = Violations()
    after = now_ms
    if request.HasField("after"):
        after = ts_to_ms(request.after)
        if not 0 <= after <= MAX_MS:
            v.add("after", "must be between 1970-01-01 and 2286-11-20")
    _, window = schedulecheck.schedule(v, "schedule", request.schedule, now_ms, require_future=False)
    jitter = schedulecheck.max_jitter(v, "max_jitter", request.max_jitter)
    if request.task_id:
        validation.task_id(request.task_id, "task_id")
    if bool(request.task_id) != request.HasField("max_jitter"):
        which = "max_jitter" if request.task_id else "task_id"
        v.add(which, "set both task_id and max_jitter, or neither")
    v.raise_if_any()
    assert window is not None
    times = window.preview_ms(after, count)
    reply = pb.PreviewScheduleResponse(fire_times=[ms_to_ts(ms) for ms in times])
    if request.task_id:
        reply.planned_times.extend(ms_to_ts(ms + jitter_ms(request.task_id, ms, jitter)) for ms in times)
    return reply
