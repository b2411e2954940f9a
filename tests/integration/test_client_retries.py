"""Client channels to the api retry the calls that only read on UNAVAILABLE (schedcore/channels.py,
API_OPTIONS), and never the ones that write: schedctl's and the dashboard's clients, against a
real gRPC server whose TaskService answers UNAVAILABLE to the first calls."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from cli.client import Client as CliClient
from schedcore import pb
from schedcore.channels import ChannelSecurity
from ui.client import Api


class Flaky(pb.task_service_grpc.TaskServiceServicer):  # type: ignore[misc]
    """UNAVAILABLE to the first `failures` calls of each method, then an answer."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: Counter[str] = Counter()

    def _maybe_fail(self, method: str, context: grpc.ServicerContext) -> None:
        self.calls[method] += 1
        if self.calls[method] <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    def GetTask(self, request: pb.GetTaskRequest, context: grpc.ServicerContext) -> pb.GetTaskResponse:
        self._maybe_fail("GetTask", context)
        return pb.GetTaskResponse(task=pb.Task(id=request.id, name="found"))

    def CreateTask(
        self, request: pb.CreateTaskRequest, context: grpc.ServicerContext
    ) -> pb.CreateTaskResponse:
        self._maybe_fail("CreateTask", context)
        return pb.CreateTaskResponse(task=request.task)


@pytest.fixture
def flaky() -> Iterator[tuple[str, Flaky]]:
    servicer = Flaky(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb.task_service_grpc.add_TaskServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(0)


PLAIN = ChannelSecurity(plaintext=True)


@pytest.mark.parametrize("kind", ["schedctl", "dashboard"])
def test_reads_are_retried_on_unavailable_and_writes_are_not(flaky: tuple[str, Flaky], kind: str) -> None:
    address, servicer = flaky
    client = CliClient(address, tls=PLAIN) if kind == "schedctl" else Api(address, security=PLAIN)
    try:
        got = client.stub.GetTask(pb.GetTaskRequest(id="0123456789abcdef"), timeout=10)
        assert got.task.name == "found" and servicer.calls["GetTask"] == 3  # two refusals, then it
        with pytest.raises(grpc.RpcError) as info:
            client.stub.CreateTask(pb.CreateTaskRequest(task=pb.Task(name="x")), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and servicer.calls["CreateTask"] == 1
    finally:
        client.channel.close()
