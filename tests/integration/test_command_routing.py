"""Routing of command work (docs/engine.md, "Routing"), with real scheduler and executor
processes: only executors started with EXECUTOR_COMMAND_TARGETS=true run command targets, other
work flows past command executions waiting for one, and the api refuses command tasks while no
scheduler vouches for such an executor."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from schedcore import pb
from schedcore.store.keys import Keys
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.command_support import COMMAND_USER_ENV, command_python
from tests.integration.engine_support import TERMINAL, Suite, every_second, once_in
from tests.integration.test_command_target import alive
from tests.support import RedisServer, ServiceThread, free_port, wait_for

SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
KEYS = Keys()
# Programs run as EXECUTOR_COMMAND_USER when the tests run as root: a Python that user can run.
PY = command_python()
# Visible to the program only if the executor leaked its own environment.
MARKER = "EXECUTOR_ONLY_MARKER"
PRINT_MARKER = f"import os; print(os.environ.get('{MARKER}', 'absent'))"


def command(*args: str) -> pb.Target:
    return pb.Target(command=pb.CommandTarget(program=PY, args=list(args)))


def snapshot(client: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


@pytest.fixture()
def bare_suite(redis_srv: RedisServer, rds: redis.Redis) -> Iterator[Suite]:
    """The api in-process, two executor ports (started by the test), no process yet."""
    api = ServiceThread(build_api, api_settings(redis_srv.url))
    s = Suite(redis_srv, api, free_port(), [free_port(), free_port()])
    try:
        yield s
    finally:
        s.close()


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, info.value.details()
    assert "EXECUTOR_COMMAND_TARGETS=true" in info.value.details()
    return info.value


def test_command_tasks_are_refused_until_an_executor_runs_them(bare_suite: Suite, rds: redis.Redis) -> None:
    s = bare_suite
    plain, capable = s.executor_ports
    s.start_executor(plain, INSTANCE_ID="plain")
    s.start_scheduler()
    log_task = s.create("log", every_second())
    s.stub.PauseTask(pb.PauseTaskRequest(id=log_task.id))  # so that nothing changes Redis below
    time.sleep(1.0)
    before = snapshot(rds)
    task = pb.Task(name="cmd", schedule=every_second(), target=command("-c", "print(1)"))
    refused(lambda: s.stub.CreateTask(pb.CreateTaskRequest(task=task)))
    log_only = pb.Task(name="log", schedule=every_second(), target=pb.Target(log=pb.LogTarget()))
    batch = [pb.CreateTaskRequest(task=log_only), pb.CreateTaskRequest(task=task)]
    refused(lambda: s.stub.BatchCreateTasks(pb.BatchCreateTasksRequest(requests=batch)))
    change = pb.Task(id=log_task.id, target=command("-c", "print(1)"))
    refused(lambda: s.stub.UpdateTask(pb.UpdateTaskRequest(task=change)))
    assert snapshot(rds) == before, "a refused call wrote to Redis"

    s.start_executor(capable, INSTANCE_ID="capable", EXECUTOR_COMMAND_TARGETS="true", **COMMAND_USER_ENV)
    created: list[pb.Task] = []

    def accepted() -> bool:
        try:
            created.append(s.stub.CreateTask(pb.CreateTaskRequest(task=task)).task)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            return False
        return True

    wait_for(accepted, timeout=15, interval=0.2)
    assert created[0].target.command.program == PY
    updated = s.stub.UpdateTask(pb.UpdateTaskRequest(task=change)).task
    assert updated.target.HasField("command")


def test_command_work_runs_only_on_the_executor_that_enables_it(bare_suite: Suite) -> None:
    s = bare_suite
    plain, capable = s.executor_ports
    s.start_executor(plain, INSTANCE_ID="plain", EXECUTOR_CONCURRENCY="3")
    s.start_executor(
        capable,
        INSTANCE_ID="capable",
        EXECUTOR_CONCURRENCY="3",
        EXECUTOR_COMMAND_TARGETS="true",
        **COMMAND_USER_ENV,
        **{MARKER: "leak"},
    )
    s.start_scheduler()
    wait_for(lambda: bool(rds_capability(s)), timeout=15)
    commands = [s.create(f"cmd {i}", every_second(), command("-c", PRINT_MARKER)) for i in range(3)]
    logs = [s.create(f"log {i}", every_second()) for i in range(12)]

    def both_ran() -> bool:
        """Six command runs, and log runs on both executors: which executor takes a log run is
        the dispatcher's choice by credits, so it is waited for, not timed."""
        done = [e for t in commands for e in s.executions(t.id) if e.status in TERMINAL]
        took_logs = {e.executor for t in logs for e in s.executions(t.id) if e.status in TERMINAL}
        return len(done) >= 6 and took_logs == {"plain", "capable"}

    wait_for(both_ran, timeout=20, interval=0.5)
    for task in [*commands, *logs]:
        s.stub.PauseTask(pb.PauseTaskRequest(id=task.id))
    time.sleep(1)
    ran_commands = [e for t in commands for e in s.executions(t.id) if e.status in TERMINAL]
    ran_logs = [e for t in logs for e in s.executions(t.id) if e.status in TERMINAL]
    assert len(ran_commands) >= 6
    assert {e.executor for e in ran_commands} == {"capable"}
    assert all(e.status == SUCCEEDED for e in ran_commands), [e.status_message for e in ran_commands]
    assert {e.result.output for e in ran_commands} == {"absent\n"}, "the executor's environment leaked"
    assert all(e.result.command.exit_code == 0 for e in ran_commands)
    assert {e.executor for e in ran_logs} == {"plain", "capable"}


def rds_capability(s: Suite) -> bytes | None:
    client = s.redis.client()
    try:
        return client.hget(KEYS.capabilities, "command")  # type: ignore[return-value]
    finally:
        client.close()


def test_command_executions_wait_without_blocking_other_work_and_run_when_an_executor_returns(
    bare_suite: Suite, rds: redis.Redis
) -> None:
    """The invariant: with no linked executor able to run them, command executions wait PENDING
    (set aside, never failed, never leased to an executor that cannot run them), however many
    stand at the head of the ready queue; log work behind them still runs; once a command
    executor connects they run there."""
    s = bare_suite
    plain, capable = s.executor_ports
    s.start_executor(plain, INSTANCE_ID="plain")
    s.start_scheduler(BATCH_SIZE="5")  # far fewer than the command executions queued first
    # A vouch left by a scheduler whose command executor has since gone (it lapses after ~10 s).
    seconds, _ = rds.time()
    rds.hset(KEYS.capabilities, "command", (seconds + 60) * 1000)
    task = s.create("cmd", every_second(), command("-c", "print('ran')"))
    s.stub.PauseTask(pb.PauseTaskRequest(id=task.id))
    manual = [s.stub.RunTask(pb.RunTaskRequest(id=task.id)).execution.id for _ in range(30)]
    log_task = s.create("log behind", every_second())
    wait_for(lambda: sum(e.status == SUCCEEDED for e in s.executions(log_task.id)) >= 3, timeout=10)
    assert all(e.executor == "plain" for e in s.executions(log_task.id) if e.status in TERMINAL)
    waiting = {e.id: e for e in s.executions(task.id)}
    assert set(manual) <= set(waiting)
    assert {e.status for e in waiting.values()} == {PENDING}, [e.status_message for e in waiting.values()]
    assert rds.zcard(KEYS.ready_command) == len(waiting)
    # Waiting longer than a lease changes nothing: they hold no lease that could expire.
    time.sleep(3)
    assert {e.status for e in s.executions(task.id)} == {PENDING}

    s.start_executor(capable, INSTANCE_ID="capable", EXECUTOR_COMMAND_TARGETS="true", **COMMAND_USER_ENV)
    wait_for(lambda: all(e.status in TERMINAL for e in s.executions(task.id)), timeout=20)
    done = s.executions(task.id)
    assert {e.status for e in done} == {SUCCEEDED}
    assert {e.executor for e in done} == {"capable"}
    assert rds.zcard(KEYS.ready_command) == 0


def test_command_executions_end_to_end(bare_suite: Suite, open_dir: Path) -> None:
    """What the execution records say about programs run through the whole suite: output, exit
    codes, failure, timeout (the whole process group killed), bounded output, no shell."""
    s = bare_suite
    s.start_executor(
        s.executor_ports[0], EXECUTOR_COMMAND_TARGETS="true", **COMMAND_USER_ENV, OUTPUT_LIMIT_BYTES="512"
    )
    s.start_scheduler()
    wait_for(lambda: bool(rds_capability(s)), timeout=15)
    pidfile, marker = open_dir / "grandchild.pid", open_dir / "touched"
    verbatim = [f"$(touch {marker})", "; rm -rf /", "*", f"`touch {marker}`"]
    targets = {
        "ok": command("-c", "import sys, json; print('payload', json.load(sys.stdin)['n'])"),
        "exit 3": command("-c", "import sys; print('partial'); sys.exit(3)"),
        "big": command("-c", "print('x' * 100000)"),
        "slow": pb.Target(
            command=pb.CommandTarget(program="/bin/sh", args=["-c", f"sleep 300 & echo $! > {pidfile}; wait"])
        ),
        "verbatim": pb.Target(command=pb.CommandTarget(program="printf", args=["%s\\n", *verbatim])),
    }
    ids = {}
    for name, target in targets.items():
        task = pb.Task(name=name, schedule=once_in(0.5), target=target)
        task.payload.update({"n": "seven"})
        task.timeout.FromMilliseconds(1500)
        ids[name] = s.stub.CreateTask(pb.CreateTaskRequest(task=task)).task.id
    done = {name: s.wait_terminal(task_id, 1, timeout=30)[0] for name, task_id in ids.items()}

    assert done["ok"].status == SUCCEEDED
    assert done["ok"].result.output == "payload seven\n"
    assert done["ok"].result.HasField("command") and done["ok"].result.command.exit_code == 0
    failed = done["exit 3"]
    assert failed.status == pb.ExecutionStatus.EXECUTION_STATUS_FAILED
    assert failed.result.command.exit_code == 3
    assert failed.result.output == "partial\n"
    assert failed.status_message == "exited with status 3"
    assert done["big"].status == SUCCEEDED
    assert done["big"].result.output_truncated
    assert len(done["big"].result.output.encode()) <= 512
    slow = done["slow"]
    assert slow.status == pb.ExecutionStatus.EXECUTION_STATUS_TIMED_OUT
    assert slow.result.command.exit_code < 0
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not alive(grandchild), timeout=5)
    assert done["verbatim"].status == SUCCEEDED
    assert done["verbatim"].result.output.splitlines() == verbatim
    assert not marker.exists()
