"""Jitter through the api and the engine (docs/scheduling.md, "Jitter"): two scheduler processes
fire every-second tasks with max_jitter; every run's planned start is the one the formula gives
(so whichever replica fired it), no executor starts it before then, and PreviewSchedule shows the
same planned times."""

from __future__ import annotations

import time

from schedcore import pb
from schedcore.schedule import jitter_ms
from tests.integration import helpers
from tests.integration.engine_support import suite
from tests.integration.helpers import TIMEOUT, invalid, ms_of
from tests.support import RedisServer

api = helpers.api
stub = helpers.stub
JITTER_MS = 600


def every_second(name: str, jitter_ms_: int = JITTER_MS) -> pb.Task:
    task = pb.Task(
        name=name, schedule=pb.Schedule(interval=pb.IntervalSchedule()), target=pb.Target(log=pb.LogTarget())
    )
    task.schedule.interval.every.FromMilliseconds(1_000)
    task.max_jitter.FromMilliseconds(jitter_ms_)
    return task


def test_two_schedulers_start_each_run_at_its_planned_time_and_never_before(redis_srv: RedisServer) -> None:
    with suite(redis_srv, schedulers=2, executors=1) as s:
        made = [s.stub.CreateTask(pb.CreateTaskRequest(task=every_second(f"j{i}"))).task for i in range(6)]
        time.sleep(5)
        for task in made:
            s.stub.PauseTask(pb.PauseTaskRequest(id=task.id))
        time.sleep(JITTER_MS / 1000 + 1)  # the last planned runs start
        runs = [e for task in made for e in s.executions(task.id)]
    assert len(runs) >= 6 * 3
    delays = set()
    for e in runs:
        nominal = ms_of(e.nominal_time)
        planned = nominal + jitter_ms(e.task_id, nominal, JITTER_MS)
        assert ms_of(e.planned_time) == planned, e.id
        assert e.status == pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED, e
        assert ms_of(e.start_time) >= planned - 5, f"{e.id} started before its planned time"
        assert e.lag.ToMilliseconds() == max(0, ms_of(e.start_time) - planned)
        delays.add(planned - nominal)
    assert len(delays) > len(runs) // 2  # the delays differ from run to run
    ids = [e.id for e in runs]
    assert len(ids) == len(set(ids))


def test_preview_shows_the_planned_times_of_a_task(stub) -> None:
    task = stub.CreateTask(pb.CreateTaskRequest(task=every_second("p", 30_000)), timeout=TIMEOUT).task
    assert task.max_jitter.ToMilliseconds() == 30_000
    request = pb.PreviewScheduleRequest(
        schedule=task.schedule, count=5, task_id=task.id, max_jitter=task.max_jitter
    )
    reply = stub.PreviewSchedule(request, timeout=TIMEOUT)
    fires = [ms_of(t) for t in reply.fire_times]
    assert [ms_of(t) for t in reply.planned_times] == [f + jitter_ms(task.id, f, 30_000) for f in fires]
    plain = stub.PreviewSchedule(pb.PreviewScheduleRequest(schedule=task.schedule, count=5), timeout=TIMEOUT)
    assert not plain.planned_times


def test_bad_jitter_is_refused_naming_the_field(stub) -> None:
    for bad in (-1, 3_600_001):
        task = every_second("bad")
        task.max_jitter.FromMilliseconds(bad)
        invalid(
            lambda t=task: stub.CreateTask(pb.CreateTaskRequest(task=t), timeout=TIMEOUT), "task.max_jitter"
        )
    task = every_second("bad")
    task.max_jitter.nanos += 1
    invalid(lambda: stub.CreateTask(pb.CreateTaskRequest(task=task), timeout=TIMEOUT), "task.max_jitter")
    lone = pb.PreviewScheduleRequest(schedule=every_second("x").schedule, task_id="00000000000000ab")
    invalid(lambda: stub.PreviewSchedule(lone, timeout=TIMEOUT), "max_jitter")
