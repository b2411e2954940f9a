"""BackfillTask (docs/scheduling.md, "Backfill"): one execution per occurrence of the range that
had no record, with the occurrence's own id; twice over a range creates nothing the second time,
two clients at once create each once; a dry run counts and writes nothing; bad ranges are
refused naming the field with Redis unchanged; a running suite executes what was filled."""

from __future__ import annotations

import threading

import grpc

from schedcore import pb
from tests.integration import helpers
from tests.integration.engine_support import TERMINAL, suite
from tests.integration.helpers import TIMEOUT, invalid, list_all_executions, ms_of, now_ms, snapshot, ts_ms
from tests.support import RedisServer, wait_for

api = helpers.api
stub = helpers.stub
T = pb.ExecutionTrigger


def every_minute(stub, start_ms: int) -> pb.Task:  # type: ignore[no-untyped-def]
    task = pb.Task(
        name="bf", schedule=pb.Schedule(interval=pb.IntervalSchedule()), target=pb.Target(log=pb.LogTarget())
    )
    task.schedule.interval.every.FromMilliseconds(60_000)
    task.schedule.interval.start_time.CopyFrom(ts_ms(start_ms))
    return stub.CreateTask(pb.CreateTaskRequest(task=task), timeout=TIMEOUT).task


def backfill(stub, task_id: str, start: int, end: int, dry: bool = False) -> pb.BackfillTaskResponse:  # type: ignore[no-untyped-def]
    request = pb.BackfillTaskRequest(id=task_id, start_time=ts_ms(start), end_time=ts_ms(end), dry_run=dry)
    return stub.BackfillTask(request, timeout=TIMEOUT)


def test_a_range_is_filled_once_and_a_second_call_creates_nothing(api, stub, rds) -> None:  # type: ignore[no-untyped-def]
    start = (now_ms() // 60_000 - 120) * 60_000  # two hours ago, on the minute
    task = every_minute(stub, start)
    dry = backfill(stub, task.id, start, start + 30 * 60_000, dry=True)
    assert (dry.occurrences, dry.existing, dry.created) == (30, 0, 0)
    assert list_all_executions(stub, task_id=task.id) == []
    first = backfill(stub, task.id, start + 10 * 60_000, start + 20 * 60_000)
    assert (first.occurrences, first.existing, first.created) == (10, 0, 10)
    wider = backfill(stub, task.id, start, start + 30 * 60_000)
    assert (wider.occurrences, wider.existing, wider.created) == (30, 10, 20)
    again = backfill(stub, task.id, start, start + 30 * 60_000)
    assert (again.created, again.existing) == (0, 30)
    with grpc.insecure_channel(api.target) as channel:  # one event per call that created some
        events = (
            pb.audit_service_grpc.AuditServiceStub(channel)
            .ListAuditEvents(pb.ListAuditEventsRequest())
            .events
        )
    backfills = [e for e in events if e.action == pb.AuditAction.AUDIT_ACTION_BACKFILL_TASK]
    assert len(backfills) == 2 and all(e.task_id == task.id for e in backfills)
    runs = list_all_executions(stub, task_id=task.id)
    assert sorted(ms_of(e.nominal_time) for e in runs) == [start + i * 60_000 for i in range(30)]
    assert {e.id for e in runs} == {f"{task.id}-{start + i * 60_000:013d}" for i in range(30)}
    assert all(
        e.trigger == T.EXECUTION_TRIGGER_BACKFILL and e.status == pb.ExecutionStatus.EXECUTION_STATUS_PENDING
        for e in runs
    )


def test_two_clients_at_once_create_each_occurrence_once(api, stub) -> None:  # type: ignore[no-untyped-def]
    start = (now_ms() // 60_000 - 600) * 60_000
    task = every_minute(stub, start)
    created: list[int] = []

    def call() -> None:
        with grpc.insecure_channel(api.target) as channel:
            other = pb.task_service_grpc.TaskServiceStub(channel)
            created.append(backfill(other, task.id, start, start + 500 * 60_000).created)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(created) == 500, created
    runs = list_all_executions(stub, task_id=task.id)
    assert len(runs) == len({e.id for e in runs}) == 500


def test_the_overlap_rule_decides_the_backfilled_runs_oldest_first(api, stub, rds) -> None:  # type: ignore[no-untyped-def]
    """The task's rule by default: with BUFFER_ONE the oldest runs, the next waits, the rest are
    SKIPPED naming the active run; a rule in the request overrides it (ALLOW: all run)."""
    start = (now_ms() // 60_000 - 60) * 60_000
    task = every_minute(stub, start)
    task.overlap.CopyFrom(pb.Overlap(policy=pb.OverlapPolicy.OVERLAP_POLICY_BUFFER_ONE))
    stub.UpdateTask(pb.UpdateTaskRequest(task=task, update_mask={"paths": ["overlap"]}), timeout=TIMEOUT)
    done = backfill(stub, task.id, start, start + 5 * 60_000)
    assert (done.occurrences, done.created, done.skipped) == (5, 5, 3)
    runs = sorted(list_all_executions(stub, task_id=task.id), key=lambda e: ms_of(e.nominal_time))
    S = pb.ExecutionStatus
    assert [e.status for e in runs] == [S.EXECUTION_STATUS_PENDING] * 2 + [S.EXECUTION_STATUS_SKIPPED] * 3
    assert "BUFFER_ONE" in runs[1].status_message
    assert all(e.status_message.startswith(f"overlap: {runs[0].id} still active") for e in runs[2:])
    assert rds.zscore("ts:{0}:ready", runs[0].id) is not None
    assert rds.zscore("ts:{0}:ready", runs[1].id) is None  # in the task's buffer
    # Asked to ALLOW, a later range runs whole.
    request = pb.BackfillTaskRequest(
        id=task.id,
        start_time=ts_ms(start + 10 * 60_000),
        end_time=ts_ms(start + 14 * 60_000),
        overlap=pb.Overlap(policy=pb.OverlapPolicy.OVERLAP_POLICY_ALLOW),
    )
    allowed = stub.BackfillTask(request, timeout=TIMEOUT)
    assert (allowed.created, allowed.skipped) == (4, 0)


def test_bad_ranges_are_refused_naming_the_field(stub, rds) -> None:
    now = now_ms()
    every_second = pb.Task(
        name="s", schedule=pb.Schedule(interval=pb.IntervalSchedule()), target=pb.Target(log=pb.LogTarget())
    )
    every_second.schedule.interval.every.FromMilliseconds(1_000)
    every_second.schedule.interval.start_time.CopyFrom(ts_ms(now - 86_400_000))
    task = stub.CreateTask(pb.CreateTaskRequest(task=every_second), timeout=TIMEOUT).task
    before = snapshot(rds)
    cases = [
        (pb.BackfillTaskRequest(id=task.id, end_time=ts_ms(now - 1000)), "start_time"),
        (
            pb.BackfillTaskRequest(id=task.id, start_time=ts_ms(now - 5000), end_time=ts_ms(now - 6000)),
            "end_time",
        ),
        (
            pb.BackfillTaskRequest(id=task.id, start_time=ts_ms(now - 5000), end_time=ts_ms(now + 60_000)),
            "end_time",
        ),
        (
            pb.BackfillTaskRequest(
                id=task.id, start_time=ts_ms(now - 3 * 3_600_000), end_time=ts_ms(now - 1000)
            ),
            "end_time",
        ),
        (pb.BackfillTaskRequest(id="nope", start_time=ts_ms(now - 5000), end_time=ts_ms(now)), "id"),
        (
            pb.BackfillTaskRequest(
                id=task.id,
                start_time=ts_ms(now - 5000),
                end_time=ts_ms(now - 1000),
                overlap=pb.Overlap(max_concurrent=101),
            ),
            "overlap.max_concurrent",
        ),
    ]
    for request, field in cases:
        invalid(lambda r=request: stub.BackfillTask(r, timeout=TIMEOUT), field)
    assert snapshot(rds) == before


def test_a_running_suite_executes_the_backfilled_occurrences(redis_srv: RedisServer) -> None:
    with suite(redis_srv, schedulers=1, executors=1) as s:
        start = (now_ms() // 60_000 - 30) * 60_000
        task = every_minute(s.stub, start)
        done = backfill(s.stub, task.id, start, start + 20 * 60_000)
        assert done.created == 20

        def finished() -> bool:
            runs = s.executions(task.id)
            return len(runs) == 20 and all(e.status in TERMINAL for e in runs)

        wait_for(finished, 20)
        assert all(e.status == pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED for e in s.executions(task.id))
