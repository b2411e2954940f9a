"""Tracing end to end (docs/tracing.md): the api, a scheduler and an executor as processes,
exporting to an OTLP receiver in this process; an http target that records the headers it got.

With OTEL_EXPORTER_OTLP_ENDPOINT set, the spans of one execution share one trace across the
processes, in the documented tree, the target receives a traceparent of that trace, and the
execution record carries the trace id. Without it nothing is exported and no traceparent is sent."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from schedcore import pb, tracing
from tests.integration.engine_support import ENGINE_ENV, ROOT, TERMINAL, http, once_in, service_argv
from tests.integration.test_executor import HttpServer
from tests.otlp_receiver import OtlpReceiver, Received
from tests.support import free_port, serving, wait_for

SCHEDULED_TREE = {
    # span name: (service, name of its parent: None for the root)
    "execution.fire": ("tasksched-scheduler", None),
    "execution.dispatch": ("tasksched-scheduler", "execution.fire"),
    "execution.attempt": ("tasksched-executor", "execution.dispatch"),
    "POST": ("tasksched-executor", "execution.attempt"),
    "execution.record": ("tasksched-scheduler", "execution.fire"),
}


class Processes:
    """api, scheduler and executor as processes on one Redis, with `env` on top."""

    def __init__(self, redis_url: str, **env: str) -> None:
        self.api_port, self.scheduler_port, self.executor_port = free_port(), free_port(), free_port()
        self.base = {
            **os.environ,
            **ENGINE_ENV,
            "REDIS_URL": redis_url,
            "GRPC_HOST": "127.0.0.1",
            "EXECUTOR_ADDRS": f"127.0.0.1:{self.executor_port}",
            "SCHEDULER_ADDR": f"127.0.0.1:{self.scheduler_port}",
            # Export within 0.1 s rather than the SDK's 5 s, so the test waits little.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            **env,
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        for module, port in (
            ("services.executor", self.executor_port),
            ("services.scheduler", self.scheduler_port),
            ("services.api", self.api_port),
        ):
            proc = subprocess.Popen(service_argv(module), cwd=ROOT, env={**self.base, "GRPC_PORT": str(port)})
            self.procs.append(proc)
            wait_for(lambda p=proc, port=port: _up(p, port), 20)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.api_port}")
        self.stub = pb.task_service_grpc.TaskServiceStub(self.channel)

    def finished(self, task_id: str, count: int = 1) -> list[pb.Execution]:
        def done() -> bool:
            found = self.stub.ListExecutions(pb.ListExecutionsRequest(task_id=task_id)).executions
            return len(found) >= count and all(e.status in TERMINAL for e in found)

        wait_for(done, 20)
        return list(self.stub.ListExecutions(pb.ListExecutionsRequest(task_id=task_id)).executions)

    def close(self) -> None:
        self.channel.close()
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)  # a clean stop flushes the spans still buffered
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _up(proc: subprocess.Popen[bytes], port: int) -> bool:
    assert proc.poll() is None, f"service on port {port} exited with {proc.returncode}"
    return serving(port)


@contextlib.contextmanager
def processes(redis_url: str, **env: str) -> Iterator[Processes]:
    running = Processes(redis_url, **env)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture()
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.stop()


def _by_name(spans: list[Received]) -> dict[str, Received]:
    named: dict[str, Received] = {}
    for s in spans:
        assert s.name not in named, f"two {s.name} spans in one trace of one attempt"
        named[s.name] = s
    return named


def _traceparent(server: HttpServer) -> str:
    assert len(server.received) == 1, server.received
    headers = {k.lower(): v for k, v in server.received[0]["headers"].items()}
    return str(headers.get("traceparent", ""))


def _wait_spans(receiver: OtlpReceiver, trace_id: str, names: set[str]) -> dict[str, Received]:
    wait_for(lambda: names <= {s.name for s in receiver.spans(trace_id)}, 15)
    return _by_name(receiver.spans(trace_id))


def test_one_trace_per_execution_across_the_processes(
    rds: Any, redis_srv: Any, receiver: OtlpReceiver, http_server: HttpServer
) -> None:
    with processes(redis_srv.url, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint) as suite:
        # The task's own traceparent is replaced, not sent beside ours.
        target = http(
            http_server.url("/ok"), headers={"TraceParent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
        )
        task = suite.stub.CreateTask(
            pb.CreateTaskRequest(task=pb.Task(name="traced", schedule=once_in(0.3), target=target))
        ).task
        [execution] = suite.finished(task.id)
        assert execution.status == pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED, execution.status_message

        # The record carries its trace id: the one derived from its id.
        assert execution.trace_id == tracing.trace_id(execution.id)
        trace_id, root_id = (f"{i:0{n}x}" for i, n in zip(tracing.ids(execution.id), (32, 16), strict=True))
        spans = _wait_spans(receiver, trace_id, set(SCHEDULED_TREE))
        assert set(spans) == set(SCHEDULED_TREE)
        for name, (service, parent) in SCHEDULED_TREE.items():
            assert spans[name].service == service, name
            expected_parent = spans[parent].span_id if parent else ""
            assert spans[name].parent_id == expected_parent, name
        assert spans["execution.fire"].span_id == root_id  # the derived root: no id stored anywhere
        assert spans["execution.attempt"].attribute("tasksched.status") == "SUCCEEDED"
        assert spans["POST"].attribute("http.response.status_code") == 200
        assert spans["execution.record"].attribute("tasksched.recorded") is True

        # The target got a traceparent naming the http span, and only that one.
        assert _traceparent(http_server) == f"00-{trace_id}-{spans['POST'].span_id}-01"
        assert sum(k.lower() == "traceparent" for k in http_server.received[0]["headers"]) == 1

        # A manual run: its root is the api's, so one trace spans the three processes.
        http_server.received.clear()
        run = suite.stub.RunTask(pb.RunTaskRequest(id=task.id)).execution
        assert run.trace_id == tracing.trace_id(run.id)
        wait_for(lambda: len(suite.finished(task.id, 2)) == 2, 20)
        spans = _wait_spans(receiver, run.trace_id, {"execution.create", "execution.record", "POST"})
        assert {s.service for s in spans.values()} == {
            "tasksched-api",
            "tasksched-scheduler",
            "tasksched-executor",
        }
        assert spans["execution.create"].parent_id == ""
        assert spans["execution.dispatch"].parent_id == spans["execution.create"].span_id
        assert spans["execution.attempt"].parent_id == spans["execution.dispatch"].span_id
        assert _traceparent(http_server).split("-")[1] == run.trace_id

        # The RPCs are spans of their own: a server span per call, named by its method.
        rpcs = {s.name: s for s in receiver.spans() if s.service == "tasksched-api"}
        create = rpcs["scheduler.v1.TaskService/CreateTask"]
        assert create.attribute("rpc.method") == "CreateTask"
        assert create.attribute("rpc.grpc.status_code") == 0
        assert "scheduler.v1.TaskService/RunTask" in rpcs
        assert not [s for s in receiver.spans() if "Health" in s.name]  # probes are not traced


def test_with_tracing_off_nothing_is_exported_and_no_traceparent_is_sent(
    rds: Any, redis_srv: Any, receiver: OtlpReceiver, http_server: HttpServer
) -> None:
    # The receiver listens, but no service is told where it is.
    with processes(redis_srv.url, OTEL_EXPORTER_OTLP_ENDPOINT="") as suite:
        target = http(http_server.url("/ok"))
        task = suite.stub.CreateTask(
            pb.CreateTaskRequest(task=pb.Task(name="untraced", schedule=once_in(0.2), target=target))
        ).task
        [execution] = suite.finished(task.id)
        assert execution.status == pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
        assert execution.trace_id == ""
        assert _traceparent(http_server) == ""
    assert receiver.spans() == []
