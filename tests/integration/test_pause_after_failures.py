"""pause_after_failures (docs/engine.md, "Pause after failures"): a task pauses itself after that
many executions in a row ended FAILED or TIMED_OUT, says why on the task and in the audit trail,
and a SUCCEEDED one starts the count again. Against a real redis-server through the scheduler's
Recorder, and end to end with the api, a scheduler and an executor as processes."""

from __future__ import annotations

import secrets

import redis

from schedcore import pb
from schedcore.settings import Settings
from schedcore.store.audit import decode
from services.scheduler.results import Recorder
from tests.integration.engine_harness import ACTIVE, PAUSED, Stores, ran, read, run, spec_of, whole_second_ago
from tests.integration.engine_support import suite
from tests.support import RedisServer, wait_for

S = pb.ExecutionStatus


def test_failures_in_a_row_pause_the_task_and_a_success_starts_the_count_again(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    async def body(stores: Stores) -> None:
        store = stores.new()
        task_id = secrets.token_hex(8)
        spec = spec_of("flaky")
        spec.id = task_id
        spec.pause_after_failures = 3
        assert await store.tasks.create(task_id, spec, ACTIVE, await whole_second_ago(store, 30)) is None
        recorder = Recorder(store, Settings())
        for status in (S.EXECUTION_STATUS_FAILED, S.EXECUTION_STATUS_TIMED_OUT, S.EXECUTION_STATUS_SUCCEEDED):
            await ran(store, recorder, status)
        await ran(store, recorder, S.EXECUTION_STATUS_FAILED)
        await ran(store, recorder, S.EXECUTION_STATUS_FAILED)
        assert (await store.tasks.get(task_id)).state == ACTIVE  # two in a row since the success
        last = await ran(store, recorder, S.EXECUTION_STATUS_TIMED_OUT)
        paused = await store.tasks.get(task_id)
        assert paused.state == PAUSED and paused.next_ms is None
        assert paused.pause_reason == f"paused after 3 failed executions in a row (the last: {last})"
        events = [decode(i, f) for i, f in await store.audit.scan(None, None, None, 100)]
        [event] = [e for e in events if e.action == pb.AuditAction.AUDIT_ACTION_PAUSE_TASK]
        assert event.actor == "scheduler" and event.task_id == task_id and event.execution_id == last
        assert event.reason == paused.pause_reason
        assert await read(store) == []  # it fires no more

    run(redis_srv.url, body)


def test_a_failing_task_pauses_itself_end_to_end_and_resume_clears_the_reason(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    with suite(redis_srv, schedulers=1, executors=1) as s:
        task = pb.Task(
            name="broken",
            schedule=pb.Schedule(interval=pb.IntervalSchedule()),
            target=pb.Target(http=pb.HttpTarget(url="http://127.0.0.1:9/nothing-listens")),
            pause_after_failures=2,
        )
        task.schedule.interval.every.FromMilliseconds(1_000)
        created = s.stub.CreateTask(pb.CreateTaskRequest(task=task)).task
        assert created.pause_after_failures == 2

        def get() -> pb.Task:
            return s.stub.GetTask(pb.GetTaskRequest(id=created.id)).task

        wait_for(lambda: get().state == pb.TaskState.TASK_STATE_PAUSED, 20)
        paused = get()
        assert paused.pause_reason.startswith("paused after 2 failed executions in a row")
        failed = [e for e in s.executions(created.id) if e.status == S.EXECUTION_STATUS_FAILED]
        assert len(failed) >= 2
        resumed = s.stub.ResumeTask(pb.ResumeTaskRequest(id=created.id)).task
        assert resumed.state == pb.TaskState.TASK_STATE_ACTIVE and resumed.pause_reason == ""
        s.stub.PauseTask(pb.PauseTaskRequest(id=created.id))
        assert get().pause_reason == ""  # a pause through the api has no such reason
