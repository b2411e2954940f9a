"""Secret environment variables of command targets (docs/security.md, "Safe targets"): like
secret headers, write-only through the api (names with empty values in every response), kept on
update when sent blank, sealed at rest with SECRET_KEYS, opened only by the executor, and scrubbed
from the execution's output."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import ipb, pb
from schedcore.sealing import PREFIX, Sealer, is_sealed, new_key
from schedcore.store.keys import Keys
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.command_support import COMMAND_USER, COMMAND_USER_ENV, command_python
from tests.integration.engine_support import TERMINAL, once_in
from tests.integration.test_api_process import api_process
from tests.integration.test_command_permission import vouch_for_a_command_executor
from tests.integration.test_command_target import command_item
from tests.integration.test_executor import executor, scheduler_stream
from tests.integration.test_secret_headers import redis_values, service
from tests.support import RedisServer, ServiceThread, free_port, wait_for

KEYS = Keys()
SECRET = "s3cret-env-5d1e77a0"
OTHER_SECRET = "s3cret-env-c42b9f18"
REFUSED_SECRET = "s3cret-refused-env-81aa"
KEY = new_key()
SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
FAILED = pb.ExecutionStatus.EXECUTION_STATUS_FAILED


def command_task(**secret_env: str) -> pb.Task:
    return pb.Task(
        name="with secret env",
        schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 0 * * *")),
        target=pb.Target(
            command=pb.CommandTarget(
                program=sys.executable,
                args=["-c", "print(1)"],
                env={"PLAIN": "visible"},
                secret_env=secret_env,
            )
        ),
    )


def stored_env(rds: redis.Redis, task_id: str) -> dict[str, str]:
    raw = rds.hget(KEYS.task(task_id), "spec")
    assert raw is not None
    return dict(pb.Task.FromString(raw).target.command.secret_env)  # type: ignore[arg-type]


def assert_redacted(task: pb.Task, *names: str) -> None:
    assert dict(task.target.command.secret_env) == dict.fromkeys(names, "")
    assert dict(task.target.command.env) == {"PLAIN": "visible"}
    assert SECRET not in str(task) and OTHER_SECRET not in str(task)


@pytest.fixture()
def commands(
    stub: pb.task_service_grpc.TaskServiceStub, rds: redis.Redis
) -> pb.task_service_grpc.TaskServiceStub:
    """The api, with a command executor vouched for (command tasks are accepted)."""
    vouch_for_a_command_executor(rds)
    return stub


def test_every_response_carrying_a_task_redacts_secret_env_values(
    commands: pb.task_service_grpc.TaskServiceStub, rds: redis.Redis
) -> None:
    task = command_task(TOKEN=SECRET, API_KEY=OTHER_SECRET)
    created = commands.CreateTask(pb.CreateTaskRequest(task=task)).task
    assert_redacted(created, "TOKEN", "API_KEY")
    assert stored_env(rds, created.id) == {"TOKEN": SECRET, "API_KEY": OTHER_SECRET}
    batch = commands.BatchCreateTasks(pb.BatchCreateTasksRequest(requests=[pb.CreateTaskRequest(task=task)]))
    assert_redacted(batch.tasks[0], "TOKEN", "API_KEY")
    assert_redacted(commands.GetTask(pb.GetTaskRequest(id=created.id)).task, "TOKEN", "API_KEY")
    for listed in commands.ListTasks(pb.ListTasksRequest()).tasks:
        assert_redacted(listed, "TOKEN", "API_KEY")
    assert_redacted(commands.PauseTask(pb.PauseTaskRequest(id=created.id)).task, "TOKEN", "API_KEY")
    renamed = commands.UpdateTask(pb.UpdateTaskRequest(task=pb.Task(id=created.id, name="renamed"))).task
    assert_redacted(renamed, "TOKEN", "API_KEY")
    assert stored_env(rds, created.id) == {"TOKEN": SECRET, "API_KEY": OTHER_SECRET}


def test_update_keeps_blank_values_removes_missing_names_and_replaces_new_values(
    commands: pb.task_service_grpc.TaskServiceStub, rds: redis.Redis
) -> None:
    created = commands.CreateTask(
        pb.CreateTaskRequest(task=command_task(TOKEN=SECRET, API_KEY=OTHER_SECRET, OLD="o"))
    ).task
    edited = commands.GetTask(pb.GetTaskRequest(id=created.id)).task  # names, empty values
    command = edited.target.command
    command.args.append("--changed")
    del command.secret_env["OLD"]
    command.secret_env["API_KEY"] = "rotated-value"
    command.secret_env["NEW"] = "brand-new"
    updated = commands.UpdateTask(
        pb.UpdateTaskRequest(task=edited, update_mask=FieldMask(paths=["target"]))
    ).task
    assert_redacted(updated, "TOKEN", "API_KEY", "NEW")
    assert list(updated.target.command.args)[-1] == "--changed"
    assert stored_env(rds, created.id) == {"TOKEN": SECRET, "API_KEY": "rotated-value", "NEW": "brand-new"}


def test_invalid_secret_env_is_refused_naming_the_variable_never_the_value(
    commands: pb.task_service_grpc.TaskServiceStub, rds: redis.Redis
) -> None:
    before = rds.dbsize()
    task = command_task(PLAIN=REFUSED_SECRET, NUL=f"{REFUSED_SECRET}\x00", **{"1BAD": REFUSED_SECRET})
    with pytest.raises(grpc.RpcError) as info:
        commands.CreateTask(pb.CreateTaskRequest(task=task))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details()
    assert "task.target.command.secret_env[PLAIN]" in details and "also named in env" in details
    assert "task.target.command.secret_env[NUL]" in details
    assert "'1BAD' is not a variable name" in details
    assert REFUSED_SECRET not in details
    too_many = command_task(**{f"S{i}": "v" for i in range(64)})  # plus PLAIN in env: 65
    with pytest.raises(grpc.RpcError) as many:
        commands.CreateTask(pb.CreateTaskRequest(task=too_many))
    assert many.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 64" in many.value.details()
    with pytest.raises(grpc.RpcError) as marked:  # the marker is reserved for the api's sealing
        commands.CreateTask(pb.CreateTaskRequest(task=command_task(TOKEN=PREFIX + "x")))
    assert marked.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "task.target.command.secret_env[TOKEN]" in marked.value.details()
    assert rds.dbsize() == before


@pytest.fixture()
def sealing(redis_srv: RedisServer, rds: redis.Redis) -> Iterator[pb.task_service_grpc.TaskServiceStub]:
    """An api that seals with KEY, a command executor vouched for."""
    vouch_for_a_command_executor(rds)
    service = ServiceThread(build_api, api_settings(redis_srv.url, secret_keys=(KEY,)))
    try:
        with grpc.insecure_channel(service.target) as channel:
            yield pb.task_service_grpc.TaskServiceStub(channel)
    finally:
        service.stop()


def test_values_are_sealed_at_rest_and_stay_sealed_through_updates(
    sealing: pb.task_service_grpc.TaskServiceStub, rds: redis.Redis
) -> None:
    created = sealing.CreateTask(pb.CreateTaskRequest(task=command_task(TOKEN=SECRET))).task
    assert_redacted(created, "TOKEN")
    assert not any(SECRET.encode() in v for v in redis_values(rds))
    stored = stored_env(rds, created.id)["TOKEN"]
    assert is_sealed(stored) and Sealer([KEY]).open(stored) == SECRET
    sealing.UpdateTask(
        pb.UpdateTaskRequest(task=pb.Task(id=created.id, name="n"), update_mask=FieldMask(paths=["name"]))
    )
    assert stored_env(rds, created.id)["TOKEN"] == stored
    edited = sealing.GetTask(pb.GetTaskRequest(id=created.id)).task
    edited.target.command.args.append("--changed")
    sealing.UpdateTask(pb.UpdateTaskRequest(task=edited, update_mask=FieldMask(paths=["target"])))
    resealed = stored_env(rds, created.id)["TOKEN"]
    assert resealed != stored and Sealer([KEY]).open(resealed) == SECRET
    assert not any(SECRET.encode() in v for v in redis_values(rds))


def echo_item(seen: Path, secret_env: dict[str, str], **kw: object) -> ipb.WorkItem:
    """A program that writes TOKEN where only the test reads it, then prints it to stdout and
    stderr (a careless script logging its credentials)."""
    code = (
        "import os, sys, pathlib; t = os.environ.get('TOKEN', '<unset>'); "
        f"pathlib.Path({str(seen)!r}).write_text(t); "
        "print('token is', t, 'plain is', os.environ['PLAIN']); print('err', t, file=sys.stderr)"
    )
    return command_item(command_python(), "-c", code, env={"PLAIN": "visible"}, secret_env=secret_env, **kw)


def run_one(work: ipb.WorkItem, **settings: object) -> ipb.WorkResult:
    with (
        executor(executor_command_targets=True, **COMMAND_USER, **settings) as ex,
        scheduler_stream(ex, auto_ack=True) as s,
    ):
        s.send(demand=1)
        s.wait_granted(1)
        s.send([work])
        return s.result(work.execution_id)


@pytest.mark.parametrize("keys", [(KEY,), (new_key(), KEY)], ids=["key", "rotating"])
def test_the_executor_opens_the_value_for_the_program_and_scrubs_it_from_the_output(
    open_dir: Path, keys: tuple[str, ...]
) -> None:
    seen = open_dir / "seen"
    result = run_one(echo_item(seen, {"TOKEN": Sealer([KEY]).seal(SECRET)}), secret_keys=keys)
    assert result.status == SUCCEEDED, result.status_message
    assert seen.read_text() == SECRET, "the program got the value in the clear"
    assert "token is [secret] plain is visible" in result.result.output
    assert "err [secret]" in result.result.output
    assert SECRET not in str(result)


def test_without_the_key_the_program_does_not_start(open_dir: Path) -> None:
    seen = open_dir / "seen"
    result = run_one(echo_item(seen, {"TOKEN": Sealer([KEY]).seal(SECRET)}))
    assert result.status == FAILED and not result.retryable
    assert "secret variable 'TOKEN' cannot be used" in result.status_message
    assert "SECRET_KEYS" in result.status_message
    assert not seen.exists(), "the program did not run"


def test_a_secret_straddling_the_output_bound_is_not_cut_in_half() -> None:
    limit = 1024
    code = f"import os; print('x' * {limit - 8} + os.environ['TOKEN'])"
    work = command_item(command_python(), "-c", code, secret_env={"TOKEN": SECRET})
    result = run_one(work, output_limit_bytes=limit)
    assert result.status == SUCCEEDED, result.status_message
    assert result.result.output_truncated
    assert len(result.result.output.encode()) <= limit
    assert SECRET[:8] not in result.result.output, "the secret's first bytes leaked past the scrub"


def test_end_to_end_only_the_program_sees_the_value(
    redis_srv: RedisServer, rds: redis.Redis, tmp_path: Path, open_dir: Path
) -> None:
    """Real api, scheduler and executor processes with SECRET_KEYS: the program gets the value,
    while Redis, the execution record, the task as read and every service's log never hold it."""
    scheduler_port, executor_port = free_port(), free_port()
    engine = {"REDIS_URL": redis_srv.url, "SCHEDULER_ADDR": f"127.0.0.1:{scheduler_port}"}
    keys = {"SECRET_KEYS": KEY}  # the api's and executor's only
    seen = open_dir / "seen"
    with (
        api_process(tmp_path, redis_srv.url, LOG_LEVEL="DEBUG", **keys) as api,
        service(
            "services.executor",
            executor_port,
            tmp_path,
            **engine,
            **keys,
            **COMMAND_USER_ENV,
            EXECUTOR_COMMAND_TARGETS="true",
        ),
        service(
            "services.scheduler",
            scheduler_port,
            tmp_path,
            EXECUTOR_ADDRS=f"127.0.0.1:{executor_port}",
            **engine,
        ),
        api.channel() as channel,
    ):
        stub = pb.task_service_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError):  # refused: its value must not be logged either
            stub.CreateTask(pb.CreateTaskRequest(task=command_task(PLAIN=REFUSED_SECRET)))
        task = command_task()
        task.target.command.CopyFrom(echo_item(seen, {"TOKEN": SECRET}).target.command)
        made: list[str] = []

        def created() -> bool:  # once the scheduler vouches for the command executor
            task.schedule.CopyFrom(once_in(0.5))
            try:
                made.append(stub.CreateTask(pb.CreateTaskRequest(task=task)).task.id)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
                return False
            return True

        wait_for(created, timeout=20, interval=0.2)
        [task_id] = made

        def done() -> list[pb.Execution]:
            found = stub.ListExecutions(pb.ListExecutionsRequest(task_id=task_id)).executions
            return [e for e in found if e.status in TERMINAL]

        wait_for(lambda: bool(done()), timeout=20)
        [execution] = done()
        read = stub.GetTask(pb.GetTaskRequest(id=task_id)).task
        held = redis_values(rds)
    assert execution.status == SUCCEEDED, execution.status_message
    assert seen.read_text() == SECRET
    assert "token is [secret]" in execution.result.output
    assert SECRET not in str(execution) and SECRET not in str(read)
    assert dict(read.target.command.secret_env) == {"TOKEN": ""}
    assert held and not any(SECRET.encode() in v for v in held)
    logs = {path.name: path.read_text() for path in tmp_path.iterdir() if path.suffix in (".out", ".err")}
    assert {"executor.out", "scheduler.out"} <= set(logs)
    for name, text in logs.items():
        for value in (SECRET, REFUSED_SECRET):
            assert value not in text, f"{value} in {name}"
