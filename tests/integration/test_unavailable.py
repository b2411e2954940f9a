"""Redis outage: every call that needs Redis fails fast with UNAVAILABLE (never INTERNAL or
UNKNOWN), health turns NOT_SERVING, and when the same Redis comes back the api recovers by itself
with the data intact."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schedcore import pb
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import (
    TIMEOUT,
    create,
    get,
    invalid,
    once_task,
    rpc_error,
    stop_service,
)
from tests.support import RedisServer, ServiceThread, wait_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# How long a call may take to report the outage: redis_timeout_s is 1 s in api_settings.
FAIL_FAST_S = 4.0


@pytest.fixture()
def outage_env() -> Iterator[tuple[RedisServer, ServiceThread]]:
    server = RedisServer()
    server.start()
    service = ServiceThread(build_api, api_settings(server.url))
    try:
        yield server, service
    finally:
        stop_service(service)
        server.cleanup()


def health_status(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT).status


def test_redis_outage_and_recovery(outage_env):
    server, service = outage_env
    with grpc.insecure_channel(service.target) as channel:
        stub = pb.task_service_grpc.TaskServiceStub(channel)
        wait_for(lambda: health_status(channel) == SERVING, timeout=5)
        task = create(stub, once_task("survivor", labels={"k": "v"}))
        execution = stub.RunTask(pb.RunTaskRequest(id=task.id), timeout=TIMEOUT).execution
        task = get(stub, task.id)
        create(stub, once_task("second"))
        page = stub.ListTasks(pb.ListTasksRequest(page_size=1), timeout=TIMEOUT)
        assert page.next_page_token

        server.stop()

        calls: dict[str, Callable[[], object]] = {
            "CreateTask": lambda: create(stub, once_task("during-outage")),
            "CreateTask+request_id": lambda: create(stub, once_task("during-outage"), request_id="r1"),
            "GetTask": lambda: get(stub, task.id),
            "ListTasks": lambda: stub.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT),
            "ListTasks+token": lambda: stub.ListTasks(
                pb.ListTasksRequest(page_size=1, page_token=page.next_page_token), timeout=TIMEOUT
            ),
            "ListTasks+next": lambda: stub.ListTasks(
                pb.ListTasksRequest(order_by=pb.TaskOrder.TASK_ORDER_NEXT_RUN_TIME), timeout=TIMEOUT
            ),
            "UpdateTask": lambda: stub.UpdateTask(
                pb.UpdateTaskRequest(
                    task=pb.Task(id=task.id, name="x"), update_mask=FieldMask(paths=["name"])
                ),
                timeout=TIMEOUT,
            ),
            "DeleteTask": lambda: stub.DeleteTask(pb.DeleteTaskRequest(id=task.id), timeout=TIMEOUT),
            "PauseTask": lambda: stub.PauseTask(pb.PauseTaskRequest(id=task.id), timeout=TIMEOUT),
            "ResumeTask": lambda: stub.ResumeTask(pb.ResumeTaskRequest(id=task.id), timeout=TIMEOUT),
            "RunTask": lambda: stub.RunTask(pb.RunTaskRequest(id=task.id), timeout=TIMEOUT),
            "ListExecutions": lambda: stub.ListExecutions(pb.ListExecutionsRequest(), timeout=TIMEOUT),
            "ListExecutions+task": lambda: stub.ListExecutions(
                pb.ListExecutionsRequest(task_id=task.id), timeout=TIMEOUT
            ),
            "GetExecution": lambda: stub.GetExecution(
                pb.GetExecutionRequest(id=execution.id), timeout=TIMEOUT
            ),
        }
        slow = {}
        for name, call in calls.items():
            started = time.monotonic()
            err = rpc_error(call, grpc.StatusCode.UNAVAILABLE)
            elapsed = time.monotonic() - started
            if elapsed > FAIL_FAST_S:
                slow[name] = round(elapsed, 2)
            assert "unavailable" in err.details(), (name, err.details())
        assert not slow, f"calls took too long to report the outage: {slow}"

        # What needs no Redis still answers: validation errors, and schedule previews.
        invalid(lambda: get(stub, "not-an-id"), "id")
        preview = stub.PreviewSchedule(
            pb.PreviewScheduleRequest(schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 * * * *"))),
            timeout=TIMEOUT,
        )
        assert len(preview.fire_times) == 5

        wait_for(lambda: health_status(channel) == NOT_SERVING, timeout=5)

        server.start()  # same port, same data directory: the AOF brings the data back

        wait_for(lambda: health_status(channel) == SERVING, timeout=10)
        # The same api, no restart: calls work again and the data is there.
        assert get(stub, task.id) == task
        assert (
            stub.GetExecution(pb.GetExecutionRequest(id=execution.id), timeout=TIMEOUT).execution == execution
        )
        rest = stub.ListTasks(
            pb.ListTasksRequest(page_size=1, page_token=page.next_page_token), timeout=TIMEOUT
        )
        assert [t.name for t in rest.tasks] == ["survivor"]
        created = create(stub, once_task("after-outage"))
        assert get(stub, created.id).name == "after-outage"
        paused = stub.PauseTask(pb.PauseTaskRequest(id=task.id, etag=task.etag), timeout=TIMEOUT).task
        assert paused.state == pb.TaskState.TASK_STATE_PAUSED
        assert stub.RunTask(pb.RunTaskRequest(id=task.id), timeout=TIMEOUT).execution.task_id == task.id


def test_api_started_while_redis_is_down(outage_env):
    """An api that starts before Redis answers reports NOT_SERVING and UNAVAILABLE (also for a
    page token: the secret that verifies it is in Redis), then serves once Redis is up, and
    accepts the token another replica issued."""
    server, first_api = outage_env
    with grpc.insecure_channel(first_api.target) as channel:
        stub = pb.task_service_grpc.TaskServiceStub(channel)
        create(stub, once_task("a"))
        create(stub, once_task("b"))
        token = stub.ListTasks(pb.ListTasksRequest(page_size=1), timeout=TIMEOUT).next_page_token
        assert token
    server.stop()
    late = ServiceThread(build_api, api_settings(server.url))
    try:
        with grpc.insecure_channel(late.target) as channel:
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            assert health_status(channel) == NOT_SERVING
            rpc_error(
                lambda: stub.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT), grpc.StatusCode.UNAVAILABLE
            )
            rpc_error(
                lambda: stub.ListTasks(pb.ListTasksRequest(page_size=1, page_token=token), timeout=TIMEOUT),
                grpc.StatusCode.UNAVAILABLE,
            )
            server.start()
            wait_for(lambda: health_status(channel) == SERVING, timeout=10)
            rest = stub.ListTasks(pb.ListTasksRequest(page_size=1, page_token=token), timeout=TIMEOUT)
            assert [t.name for t in rest.tasks] == ["b"]
            assert get(stub, create(stub, once_task("c")).id).name == "c"
    finally:
        stop_service(late)


def test_frozen_redis_is_unavailable_not_a_hang(outage_env):
    """A Redis that accepts connections but never answers (SIGSTOP, like a network partition):
    calls time out against redis_timeout_s and report UNAVAILABLE; once it answers again, so
    does the api."""
    server, service = outage_env
    assert server.proc is not None
    with grpc.insecure_channel(service.target) as channel:
        stub = pb.task_service_grpc.TaskServiceStub(channel)
        task = create(stub, once_task("frozen"))
        server.proc.send_signal(signal.SIGSTOP)
        try:
            calls: dict[str, Callable[[], object]] = {
                "CreateTask": lambda: create(stub, once_task("x")),
                "GetTask": lambda: get(stub, task.id),
                "ListTasks": lambda: stub.ListTasks(pb.ListTasksRequest(), timeout=TIMEOUT),
                "PauseTask": lambda: stub.PauseTask(pb.PauseTaskRequest(id=task.id), timeout=TIMEOUT),
                "RunTask": lambda: stub.RunTask(pb.RunTaskRequest(id=task.id), timeout=TIMEOUT),
                "ListExecutions": lambda: stub.ListExecutions(pb.ListExecutionsRequest(), timeout=TIMEOUT),
            }

            def timed(call: Callable[[], object]) -> tuple[str, float]:
                started = time.monotonic()
                try:
                    call()
                    code = "OK"
                except grpc.RpcError as err:
                    code = err.code().name
                return code, time.monotonic() - started

            with ThreadPoolExecutor(len(calls)) as pool:
                results = dict(zip(calls, pool.map(timed, calls.values()), strict=True))
            assert {name: code for name, (code, _) in results.items()} == {
                name: "UNAVAILABLE" for name in calls
            }
            assert max(elapsed for _, elapsed in results.values()) < FAIL_FAST_S, results
            wait_for(lambda: health_status(channel) == NOT_SERVING, timeout=5)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: health_status(channel) == SERVING, timeout=10)
        current = get(stub, task.id)
        assert current.state == pb.TaskState.TASK_STATE_ACTIVE and current.etag == "1"


def test_liveness_stays_serving_while_redis_is_down(outage_env):
    """Readiness (the empty service name) follows Redis; the `liveness` name, which Kubernetes'
    liveness probes ask for, does not: an outage must not get every replica restarted."""
    server, service = outage_env

    def status(channel: grpc.Channel, name: str) -> int:
        request = health_pb2.HealthCheckRequest(service=name)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=TIMEOUT).status

    with grpc.insecure_channel(service.target) as channel:
        wait_for(lambda: status(channel, "") == SERVING, timeout=5)
        assert status(channel, "liveness") == SERVING
        server.stop()
        wait_for(lambda: status(channel, "") == NOT_SERVING, timeout=5)
        assert status(channel, "liveness") == SERVING
