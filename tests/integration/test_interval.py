"""Interval schedules (docs/scheduling.md, "Interval schedules"): every N from a start time that
sets the phase. The api stores the phase (now when none is given), previews and next runs stay on
it, an edit of the period keeps it, and a scheduler killed and started again fires on it with
each occurrence once."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import pb
from tests.integration import helpers
from tests.integration.engine_support import suite
from tests.integration.helpers import TIMEOUT, create, dt_of, ms_of, now_ms, ts_dt, ts_ms
from tests.support import RedisServer

api = helpers.api
stub = helpers.stub


def interval(every_ms: int, start_ms: int | None = None, end_ms: int | None = None) -> pb.Schedule:
    schedule = pb.Schedule(interval=pb.IntervalSchedule())
    schedule.interval.every.FromMilliseconds(every_ms)
    if start_ms is not None:
        schedule.interval.start_time.CopyFrom(ts_ms(start_ms))
    if end_ms is not None:
        schedule.interval.end_time.CopyFrom(ts_ms(end_ms))
    return schedule


def task(name: str, schedule: pb.Schedule) -> pb.Task:
    return pb.Task(name=name, schedule=schedule, target=pb.Target(log=pb.LogTarget()))


def test_without_a_start_the_api_anchors_now_and_stores_it(stub) -> None:
    before = now_ms()
    made = create(stub, task("every-5m", interval(300_000)))
    start = ms_of(made.schedule.interval.start_time)
    assert before <= start <= now_ms()
    assert ms_of(made.next_run_time) == start + 300_000
    again = stub.GetTask(pb.GetTaskRequest(id=made.id), timeout=TIMEOUT).task
    assert again.schedule.interval.start_time == made.schedule.interval.start_time


def test_next_runs_and_previews_stay_on_the_phase_and_end(stub) -> None:
    start = datetime(2030, 1, 1, 0, 0, 7, tzinfo=UTC)
    schedule = interval(90_000, int(start.timestamp() * 1000), int(start.timestamp() * 1000) + 270_000)
    request = pb.PreviewScheduleRequest(
        schedule=schedule, count=10, after=ts_dt(datetime(2029, 1, 1, tzinfo=UTC))
    )
    got = [dt_of(t) for t in stub.PreviewSchedule(request, timeout=TIMEOUT).fire_times]
    assert [(t - start).total_seconds() for t in got] == [0, 90, 180, 270]  # the end is inclusive
    phase = now_ms() - 3_600_000 + 123  # a phase set an hour ago
    made = create(stub, task("phased", interval(7_000, phase)))
    nxt = ms_of(made.next_run_time)
    assert (nxt - phase) % 7_000 == 0
    assert 0 < nxt - now_ms() <= 7_000


def test_a_new_period_keeps_the_stored_phase(stub) -> None:
    made = create(stub, task("edit", interval(60_000, now_ms() + 10_000)))
    change = pb.Task(id=made.id)
    change.schedule.CopyFrom(made.schedule)
    change.schedule.interval.every.FromMilliseconds(30_000)
    updated = stub.UpdateTask(
        pb.UpdateTaskRequest(task=change, update_mask=FieldMask(paths=["schedule"])),
        timeout=TIMEOUT,
    ).task
    assert updated.schedule.interval.start_time == made.schedule.interval.start_time
    assert updated.schedule.interval.every.ToMilliseconds() == 30_000
    assert updated.next_run_time == made.schedule.interval.start_time  # the first is still ahead


def test_a_killed_scheduler_started_again_fires_on_the_phase_once_each(redis_srv: RedisServer) -> None:
    with suite(redis_srv, schedulers=1, executors=1) as s:
        phase = (now_ms() // 1000 + 2) * 1000 + 250  # x.250 s, every second
        made = s.stub.CreateTask(pb.CreateTaskRequest(task=task("on-phase", interval(1_000, phase)))).task
        time.sleep(3.5)
        scheduler = s.processes[-1]
        scheduler.send_signal(signal.SIGKILL)
        scheduler.wait(5)
        time.sleep(1.5)  # occurrences come due with no scheduler
        s.start_scheduler()
        time.sleep(3)
        s.stub.PauseTask(pb.PauseTaskRequest(id=made.id))
        time.sleep(0.5)
        runs = s.executions(made.id)
    nominal = sorted(ms_of(e.nominal_time) for e in runs)
    assert len(nominal) == len(set(nominal)), "an occurrence fired twice"
    assert all(n % 1000 == 250 for n in nominal), nominal
    assert nominal[0] == phase and nominal == list(range(phase, nominal[-1] + 1000, 1000)), "a gap"
    assert len(nominal) >= 6  # before the kill, the ones due meanwhile, and after the restart
