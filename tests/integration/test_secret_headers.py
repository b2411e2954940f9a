"""Secret headers of http targets (docs/security.md, "Safe targets"): stored and sent, but
write-only through the api (every response carrying a task shows names with empty values),
merged on update, and never in logs or execution output."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import pb
from schedcore.sealing import PREFIX, Sealer, is_sealed, new_key
from schedcore.store.keys import Keys
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.engine_support import ENGINE_ENV, ROOT, TERMINAL, once_in
from tests.integration.test_api_process import api_process, process_env
from tests.integration.test_executor import HttpServer, executor, http_item, scheduler_stream
from tests.support import RedisServer, ServiceThread, free_port, serving, wait_for

KEYS = Keys()
SECRET = "s3cret-bearer-7f2a91c4"
OTHER_SECRET = "s3cret-key-0b7d55e3"
REFUSED_SECRET = "s3cret-refused-9c1e"


def http_task(url: str = "https://example.com/hook", **secret: str) -> pb.Task:
    return pb.Task(
        name="with secrets",
        schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 0 * * *")),
        target=pb.Target(http=pb.HttpTarget(url=url, headers={"X-Plain": "visible"}, secret_headers=secret)),
    )


def stored_secrets(rds: redis.Redis, task_id: str) -> dict[str, str]:
    raw = rds.hget(KEYS.task(task_id), "spec")
    assert raw is not None
    return dict(pb.Task.FromString(raw).target.http.secret_headers)  # type: ignore[arg-type]


def assert_redacted(task: pb.Task, *names: str) -> None:
    assert dict(task.target.http.secret_headers) == dict.fromkeys(names, "")
    assert dict(task.target.http.headers) == {"X-Plain": "visible"}
    assert SECRET not in str(task) and OTHER_SECRET not in str(task)


def test_every_response_carrying_a_task_redacts_secret_values(
    stub: pb.task_service_grpc.TaskServiceStub, rds: redis.Redis
) -> None:
    task = http_task(Authorization=SECRET, **{"X-Api-Key": OTHER_SECRET})
    created = stub.CreateTask(pb.CreateTaskRequest(task=task)).task
    assert_redacted(created, "Authorization", "X-Api-Key")
    assert stored_secrets(rds, created.id) == {"Authorization": SECRET, "X-Api-Key": OTHER_SECRET}

    batch = stub.BatchCreateTasks(pb.BatchCreateTasksRequest(requests=[pb.CreateTaskRequest(task=task)] * 2))
    for t in batch.tasks:
        assert_redacted(t, "Authorization", "X-Api-Key")
        assert stored_secrets(rds, t.id)["Authorization"] == SECRET

    assert_redacted(stub.GetTask(pb.GetTaskRequest(id=created.id)).task, "Authorization", "X-Api-Key")
    listed = stub.ListTasks(pb.ListTasksRequest()).tasks
    assert len(listed) == 3
    for t in listed:
        assert_redacted(t, "Authorization", "X-Api-Key")
    assert_redacted(stub.PauseTask(pb.PauseTaskRequest(id=created.id)).task, "Authorization", "X-Api-Key")
    assert_redacted(stub.ResumeTask(pb.ResumeTaskRequest(id=created.id)).task, "Authorization", "X-Api-Key")
    renamed = stub.UpdateTask(pb.UpdateTaskRequest(task=pb.Task(id=created.id, name="renamed"))).task
    assert_redacted(renamed, "Authorization", "X-Api-Key")
    assert stored_secrets(rds, created.id) == {"Authorization": SECRET, "X-Api-Key": OTHER_SECRET}


def test_update_keeps_blank_values_removes_missing_names_and_replaces_new_values(
    stub: pb.task_service_grpc.TaskServiceStub, rds: redis.Redis
) -> None:
    created = stub.CreateTask(
        pb.CreateTaskRequest(
            task=http_task(Authorization=SECRET, **{"X-Api-Key": OTHER_SECRET, "X-Old": "o"})
        )
    ).task
    # What a client does: read the task (names, empty values), change the target, send it back.
    edited = stub.GetTask(pb.GetTaskRequest(id=created.id)).task
    http = edited.target.http
    http.url = "https://example.com/other"
    del http.secret_headers["X-Old"]
    http.secret_headers["X-Api-Key"] = "rotated-value"
    http.secret_headers["X-New"] = "brand-new"
    request = pb.UpdateTaskRequest(task=edited, update_mask=FieldMask(paths=["target"]))
    updated = stub.UpdateTask(request).task
    assert_redacted(updated, "Authorization", "X-Api-Key", "X-New")
    assert updated.target.http.url == "https://example.com/other"
    assert stored_secrets(rds, created.id) == {
        "Authorization": SECRET,
        "X-Api-Key": "rotated-value",
        "X-New": "brand-new",
    }
    # A target of another kind drops them; coming back to http does not resurrect them.
    stub.UpdateTask(pb.UpdateTaskRequest(task=pb.Task(id=created.id, target=pb.Target(log=pb.LogTarget()))))
    back = http_task(Authorization="")
    back.id = created.id
    stub.UpdateTask(pb.UpdateTaskRequest(task=back, update_mask=FieldMask(paths=["target"])))
    assert stored_secrets(rds, created.id) == {"Authorization": ""}


def test_invalid_secret_headers_are_refused_without_quoting_values(
    stub: pb.task_service_grpc.TaskServiceStub,
) -> None:
    task = http_task(**{"x-plain": REFUSED_SECRET, "X-Bad": f"{REFUSED_SECRET}\r\nInjected: 1"})
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateTask(pb.CreateTaskRequest(task=task))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details()
    assert "task.target.http.secret_headers[x-plain]" in details
    assert "task.target.http.secret_headers[X-Bad]" in details
    assert REFUSED_SECRET not in details


@contextlib.contextmanager
def service(module: str, port: int, logs: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    full = process_env(
        **{**ENGINE_ENV, "LOG_LEVEL": "DEBUG"}, GRPC_HOST="127.0.0.1", GRPC_PORT=str(port), **env
    )
    name = module.rsplit(".", 1)[1]
    with open(logs / f"{name}.out", "wb") as out, open(logs / f"{name}.err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=full, stdout=out, stderr=err)
    try:
        wait_for(lambda: proc.poll() is None and serving(port), timeout=20)
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_secret_headers_reach_the_target_and_nothing_else(
    redis_srv: RedisServer, rds: redis.Redis, http_server: HttpServer, tmp_path: Path, sealed: bool
) -> None:
    scheduler_port, executor_port = free_port(), free_port()
    engine = {"REDIS_URL": redis_srv.url, "SCHEDULER_ADDR": f"127.0.0.1:{scheduler_port}"}
    keys = {"SECRET_KEYS": f"{NEW_KEY},{OLD_KEY}"} if sealed else {}  # the api's and executor's only
    with (
        api_process(tmp_path, redis_srv.url, LOG_LEVEL="DEBUG", **keys) as api,
        service("services.executor", executor_port, tmp_path, **engine, **keys),
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
            stub.CreateTask(pb.CreateTaskRequest(task=http_task(**{"X-Bad": f"{REFUSED_SECRET}\n"})))
        echo = http_task(http_server.url("/echo"), Authorization=SECRET, **{"X-Api-Key": OTHER_SECRET})
        echo.schedule.CopyFrom(once_in(0.3))
        failing = http_task(http_server.url("/status/503"), Authorization=SECRET)
        failing.schedule.CopyFrom(once_in(0.3))
        ids = [stub.CreateTask(pb.CreateTaskRequest(task=t)).task.id for t in (echo, failing)]

        def executions() -> list[pb.Execution]:
            return [
                e for i in ids for e in stub.ListExecutions(pb.ListExecutionsRequest(task_id=i)).executions
            ]

        wait_for(
            lambda: len(executions()) == 2 and all(e.status in TERMINAL for e in executions()), timeout=20
        )
        done = {e.task_id: e for e in executions()}
        tasks = [stub.GetTask(pb.GetTaskRequest(id=i)).task for i in ids]
        if sealed:  # nothing in Redis holds a secret in the clear: tasks, executions, queues, audit
            held = redis_values(rds)
            assert held and not any(SECRET.encode() in v or OTHER_SECRET.encode() in v for v in held)

    received = {r["path"]: r["headers"] for r in http_server.received}
    assert received["/echo"]["Authorization"] == SECRET
    assert received["/echo"]["X-Api-Key"] == OTHER_SECRET
    assert received["/echo"]["X-Plain"] == "visible"
    assert received["/status/503"]["Authorization"] == SECRET

    echoed = done[ids[0]]
    assert echoed.status == pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
    assert '"Authorization": "[secret]"' in echoed.result.output  # the target echoed it: scrubbed
    assert '"X-Plain": "visible"' in echoed.result.output
    assert done[ids[1]].status == pb.ExecutionStatus.EXECUTION_STATUS_FAILED
    for execution in done.values():
        assert SECRET not in str(execution) and OTHER_SECRET not in str(execution)
    for task in tasks:
        assert SECRET not in str(task)

    logs = {path.name: path.read_text() for path in tmp_path.iterdir() if path.suffix in (".out", ".err")}
    assert {"executor.out", "scheduler.out"} <= set(logs)
    assert any(text for text in logs.values()), "the services logged nothing: the check below means nothing"
    for name, text in logs.items():
        for value in (SECRET, OTHER_SECRET, REFUSED_SECRET):
            assert value not in text, f"{value} in {name}"


def redis_values(rds: redis.Redis) -> list[bytes]:
    """Every key name, field and value of every key in the database."""
    out: list[bytes] = []
    for key in rds.scan_iter(count=1000):
        kind = rds.type(key)
        out.append(key)
        if kind == b"string":
            out.append(rds.get(key) or b"")
        elif kind == b"hash":
            out += [x for pair in rds.hgetall(key).items() for x in pair]
        elif kind == b"list":
            out += rds.lrange(key, 0, -1)
        elif kind == b"set":
            out += list(rds.smembers(key))
        elif kind == b"zset":
            out += rds.zrange(key, 0, -1)
        elif kind == b"stream":
            out += [x for _, fields in rds.xrange(key) for pair in fields.items() for x in pair]
    return out


# --- sealed at rest (SECRET_KEYS) -------------------------------------------------------------------

NEW_KEY, OLD_KEY = new_key(), new_key()


@pytest.fixture()
def sealing(redis_srv: RedisServer, rds: redis.Redis) -> Iterator[pb.task_service_grpc.TaskServiceStub]:
    """An api that seals with NEW_KEY and opens NEW_KEY and OLD_KEY (a rotation under way)."""
    service = ServiceThread(build_api, api_settings(redis_srv.url, secret_keys=(NEW_KEY, OLD_KEY)))
    try:
        with grpc.insecure_channel(service.target) as channel:
            yield pb.task_service_grpc.TaskServiceStub(channel)
    finally:
        service.stop()


def test_values_are_sealed_at_rest_and_stay_sealed_through_updates(
    sealing: pb.task_service_grpc.TaskServiceStub,
    stub: pb.task_service_grpc.TaskServiceStub,
    rds: redis.Redis,
) -> None:
    request = pb.CreateTaskRequest(task=http_task(Authorization=SECRET), request_id="sealed-once")
    created = sealing.CreateTask(request).task
    assert_redacted(created, "Authorization")
    raw = rds.hget(KEYS.task(created.id), "spec")
    assert raw is not None and SECRET.encode() not in raw
    stored = stored_secrets(rds, created.id)["Authorization"]
    assert is_sealed(stored) and Sealer([NEW_KEY]).open(stored) == SECRET
    assert sealing.CreateTask(request).task.id == created.id, (
        "a repeat is still recognised (sealing is random)"
    )

    # An update that leaves the target alone leaves the sealed value as it is.
    sealing.UpdateTask(
        pb.UpdateTaskRequest(
            task=pb.Task(id=created.id, name="renamed"), update_mask=FieldMask(paths=["name"])
        )
    )
    assert stored_secrets(rds, created.id)["Authorization"] == stored
    # A value sealed with the old key, kept by an update, comes back sealed with the new one.
    spec = pb.Task.FromString(rds.hget(KEYS.task(created.id), "spec"))  # type: ignore[arg-type]
    spec.target.http.secret_headers["Authorization"] = Sealer([OLD_KEY]).seal(OTHER_SECRET)
    rds.hset(KEYS.task(created.id), "spec", spec.SerializeToString())
    edited = sealing.GetTask(pb.GetTaskRequest(id=created.id)).task
    edited.target.http.url = "https://example.com/moved"
    sealing.UpdateTask(pb.UpdateTaskRequest(task=edited, update_mask=FieldMask(paths=["target"])))
    resealed = stored_secrets(rds, created.id)["Authorization"]
    assert Sealer([NEW_KEY]).open(resealed) == OTHER_SECRET

    # An api without the keys cannot keep a sealed value: it says so, and changes nothing.
    edited = stub.GetTask(pb.GetTaskRequest(id=created.id)).task
    edited.target.http.url = "https://example.com/elsewhere"
    with pytest.raises(grpc.RpcError) as refused:
        stub.UpdateTask(pb.UpdateTaskRequest(task=edited, update_mask=FieldMask(paths=["target"])))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        "secret_headers[Authorization]" in refused.value.details()
        and "SECRET_KEYS" in refused.value.details()
    )
    assert stored_secrets(rds, created.id)["Authorization"] == resealed

    # The marker is reserved: a value that looks sealed is refused.
    with pytest.raises(grpc.RpcError) as marked:
        sealing.CreateTask(pb.CreateTaskRequest(task=http_task(Authorization=PREFIX + "x")))
    assert marked.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("keys", [(NEW_KEY,), (OLD_KEY, NEW_KEY), ()])
def test_the_executor_opens_sealed_values_only_with_the_key(
    http_server: HttpServer, keys: tuple[str, ...]
) -> None:
    work = http_item(
        http_server.url("/echo"), secret_headers={"Authorization": Sealer([NEW_KEY]).seal(SECRET)}
    )
    with executor(secret_keys=keys) as ex, scheduler_stream(ex, auto_ack=True) as s:
        s.send(demand=1)
        s.wait_granted(1)
        s.send([work])
        result = s.result(work.execution_id)
    if keys:
        assert result.status == pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
        assert http_server.received[0]["headers"]["Authorization"] == SECRET
        assert SECRET not in result.result.output
    else:
        assert result.status == pb.ExecutionStatus.EXECUTION_STATUS_FAILED and not result.retryable
        assert "secret header 'Authorization' cannot be used" in result.status_message
        assert "SECRET_KEYS" in result.status_message
        assert http_server.received == [], "nothing is sent without the header"


def test_an_echoed_secret_is_scrubbed_json_escaped_and_url_encoded_too(http_server: HttpServer) -> None:
    """/echo shows the request's headers as JSON (a quote and a backslash escaped), /form
    URL-encoded: neither form of the value may reach the execution's output."""
    secret = 's3cret "quoted" \\ back/slash +&=%'
    items = [
        http_item(url, secret_headers={"Authorization": secret}, headers={"X-Plain": "seen"})
        for url in (http_server.url("/echo"), http_server.url("/form"))
    ]
    with executor() as ex, scheduler_stream(ex, auto_ack=True) as s:
        s.send(demand=2)
        s.wait_granted(2)
        s.send(items)
        results = [s.result(work.execution_id) for work in items]
    assert {r["headers"]["Authorization"] for r in http_server.received} == {secret}
    echoed, form = (r.result.output for r in results)
    assert '"Authorization": "[secret]"' in echoed and '"X-Plain": "seen"' in echoed, echoed
    assert "Authorization=[secret]" in form and "X-Plain=seen" in form, form
    for output in (echoed, form):
        assert "s3cret" not in output and "back" not in output, output
