"""CancelExecution end to end (docs/engine.md, "Cancel"): the api, a scheduler and an executor as
processes. A pending execution ends at once; a running http call is aborted (the target sees its
connection closed) and a running command's processes are gone; the records end CANCELLED, the
audit trail names the call, and bad or late requests are refused without changing anything."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest
import redis

from schedcore import pb
from tests.integration.command_support import COMMAND_USER_ENV
from tests.integration.engine_support import suite
from tests.integration.slow_target import SlowTarget
from tests.integration.test_command_target import alive
from tests.support import RedisServer, wait_for

S = pb.ExecutionStatus
PAUSED_SCHEDULE = pb.Schedule(cron=pb.CronSchedule(expression="0 0 1 1 *"))


def refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    assert info.value.code() == code, info.value.details()
    return str(info.value.details())


def test_cancel_stops_a_running_http_call_and_a_command_and_ends_a_pending_one(
    redis_srv: RedisServer, rds: redis.Redis, target: SlowTarget, open_dir: Path
) -> None:
    env = {"LEASE_SECONDS": "3", "EXECUTOR_COMMAND_TARGETS": "true", **COMMAND_USER_ENV}
    with suite(redis_srv, schedulers=1, executors=1, **env) as s:
        pidfile = open_dir / "child.pid"
        targets = {
            "http": pb.Target(http=pb.HttpTarget(url=f"http://127.0.0.1:{target.port}/hang")),
            "command": pb.Target(
                command=pb.CommandTarget(
                    program="/bin/sh", args=["-c", f"sleep 300 & echo $! > {pidfile}; wait"]
                )
            ),
        }
        runs = {}
        for name, t in targets.items():
            task = pb.Task(name=name, schedule=PAUSED_SCHEDULE, target=t)
            task.timeout.FromSeconds(120)
            created = s.stub.CreateTask(pb.CreateTaskRequest(task=task)).task
            runs[name] = s.stub.RunTask(pb.RunTaskRequest(id=created.id)).execution.id

        def status(eid: str) -> pb.Execution:
            return s.stub.GetExecution(pb.GetExecutionRequest(id=eid)).execution

        wait_for(lambda: all(status(e).status == S.EXECUTION_STATUS_RUNNING for e in runs.values()), 20)
        wait_for(
            lambda: bool(target.calls["/hang"]) and pidfile.exists() and pidfile.read_text().strip() != "", 20
        )
        child = int(pidfile.read_text())
        asked = time.monotonic()
        for eid in runs.values():
            reply = s.stub.CancelExecution(pb.CancelExecutionRequest(id=eid, reason="a test"))
            assert reply.execution.status == S.EXECUTION_STATUS_RUNNING and reply.execution.HasField(
                "cancel_time"
            )
        # Stopped within a renewal period (LEASE_SECONDS / 3) and the executor's stop.
        wait_for(lambda: all(status(e).status == S.EXECUTION_STATUS_CANCELLED for e in runs.values()), 15)
        took = time.monotonic() - asked
        [call] = target.calls["/hang"]
        assert call.closed and call.end - asked < took + 0.5
        wait_for(lambda: not alive(child), 5)
        for eid in runs.values():
            ended = status(eid)
            assert ended.status_message.startswith(
                "cancelled: CancelExecution"
            ) and ended.status_message.endswith(": a test"), ended.status_message
            # A cancelled execution is not run again, and cannot be cancelled again.
            details = refused(
                lambda eid=eid: s.stub.CancelExecution(pb.CancelExecutionRequest(id=eid)),
                grpc.StatusCode.FAILED_PRECONDITION,
            )
            assert "has ended (CANCELLED)" in details
        time.sleep(1.5)
        assert len(target.calls["/hang"]) == 1
        audit = pb.audit_service_grpc.AuditServiceStub(s.channel)
        events = audit.ListAuditEvents(pb.ListAuditEventsRequest()).events
        cancels = [e for e in events if e.action == pb.AuditAction.AUDIT_ACTION_CANCEL_EXECUTION]
        assert sorted(e.execution_id for e in cancels) == sorted(runs.values())


def test_bad_cancel_requests_are_refused_naming_the_field(redis_srv: RedisServer, rds: redis.Redis) -> None:
    with suite(redis_srv, schedulers=0, executors=0) as s:
        task = pb.Task(name="t", schedule=PAUSED_SCHEDULE, target=pb.Target(log=pb.LogTarget()))
        created = s.stub.CreateTask(pb.CreateTaskRequest(task=task)).task
        pending = s.stub.RunTask(pb.RunTaskRequest(id=created.id)).execution
        before = {k: rds.dump(k) for k in rds.keys("*")}
        details = refused(
            lambda: s.stub.CancelExecution(pb.CancelExecutionRequest(id="nope")),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "id" in details
        too_long = pb.CancelExecutionRequest(id=pending.id, reason="x" * 501)
        assert "reason" in refused(lambda: s.stub.CancelExecution(too_long), grpc.StatusCode.INVALID_ARGUMENT)
        missing = pb.CancelExecutionRequest(id=f"{created.id}-0000000000000")
        refused(lambda: s.stub.CancelExecution(missing), grpc.StatusCode.NOT_FOUND)
        assert {k: rds.dump(k) for k in rds.keys("*")} == before
        # A pending one (no executor) ends at once, out of the ready queue.
        reply = s.stub.CancelExecution(pb.CancelExecutionRequest(id=pending.id))
        assert reply.execution.status == S.EXECUTION_STATUS_CANCELLED
        assert reply.execution.status_message == "cancelled: CancelExecution"
        assert reply.execution.HasField("finish_time")
        assert rds.zscore("ts:{0}:ready", pending.id) is None
        got = s.stub.GetTask(pb.GetTaskRequest(id=created.id)).task
        assert got.last_execution.status == S.EXECUTION_STATUS_CANCELLED


def test_a_running_execution_whose_executor_was_killed_ends_cancelled_and_never_runs_again(
    redis_srv: RedisServer, rds: redis.Redis, target: SlowTarget
) -> None:
    """The executor is SIGKILLed mid-call, then the execution is cancelled: nobody can stop the
    attempt, so its lease runs out and reclaim ends it CANCELLED; an executor started afterwards
    never calls the target again."""
    env = {"LEASE_SECONDS": "3"}
    with suite(redis_srv, schedulers=1, executors=1, **env) as s:
        task = pb.Task(
            name="http",
            schedule=PAUSED_SCHEDULE,
            target=pb.Target(http=pb.HttpTarget(url=f"http://127.0.0.1:{target.port}/hang")),
        )
        task.timeout.FromSeconds(120)
        created = s.stub.CreateTask(pb.CreateTaskRequest(task=task)).task
        eid = s.stub.RunTask(pb.RunTaskRequest(id=created.id)).execution.id
        wait_for(lambda: bool(target.calls["/hang"]), 20)
        [executor, _] = s.processes
        executor.send_signal(signal.SIGKILL)
        executor.wait(5)
        reply = s.stub.CancelExecution(pb.CancelExecutionRequest(id=eid))
        assert reply.execution.status == S.EXECUTION_STATUS_RUNNING
        s.start_executor(s.executor_ports[0], **env)

        def ended() -> pb.Execution:
            return s.stub.GetExecution(pb.GetExecutionRequest(id=eid)).execution

        wait_for(lambda: ended().status == S.EXECUTION_STATUS_CANCELLED, 20)
        assert ended().status_message == "cancelled: CancelExecution"
        time.sleep(2)
        assert len(target.calls["/hang"]) == 1  # not run again by the new executor
        assert rds.zscore("ts:{0}:inflight", eid) is None and rds.zscore("ts:{0}:ready", eid) is None
