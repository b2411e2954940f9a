"""A running suite for engine tests: the api in-process; schedulers and executors as real
processes (so kill -9 means something, and their event loops do not share the test's GIL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from schedcore import pb
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.support import RedisServer, ServiceThread, free_port, serving, wait_for

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {
    pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED,
    pb.ExecutionStatus.EXECUTION_STATUS_FAILED,
    pb.ExecutionStatus.EXECUTION_STATUS_TIMED_OUT,
    pb.ExecutionStatus.EXECUTION_STATUS_CANCELLED,
    pb.ExecutionStatus.EXECUTION_STATUS_SKIPPED,
}
# Short leases and polls keep the tests quick; the variables are schedcore/settings.py's.
ENGINE_ENV = {
    "LEASE_SECONDS": "2",
    "POLL_INTERVAL_SECONDS": "0.02",
    "HEALTH_INTERVAL_SECONDS": "0.2",
    "SHUTDOWN_GRACE_SECONDS": "1",
    "LOG_LEVEL": "WARNING",
}


@dataclass
class Suite:
    redis: RedisServer
    api: ServiceThread
    scheduler_port: int
    executor_ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.api.target)
        self.stub = pb.task_service_grpc.TaskServiceStub(self.channel)

    def env(self, port: int, **overrides: str) -> dict[str, str]:
        return {
            **os.environ,
            **ENGINE_ENV,
            "REDIS_URL": self.redis.url,
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(port),
            "EXECUTOR_ADDRS": ",".join(f"127.0.0.1:{p}" for p in self.executor_ports),
            "SCHEDULER_ADDR": f"127.0.0.1:{self.scheduler_port}",
            **overrides,  # may replace any of the above (LEASE_SECONDS, say)
        }

    def start(self, module: str, port: int, **overrides: str) -> subprocess.Popen[bytes]:
        """Run a service as a real process and wait until its health check says SERVING."""
        proc = subprocess.Popen(service_argv(module), cwd=ROOT, env=self.env(port, **overrides))
        self.processes.append(proc)
        wait_for(lambda: _serving(port, proc), 20)
        return proc

    def start_executor(self, port: int, **overrides: str) -> subprocess.Popen[bytes]:
        return self.start("services.executor", port, **overrides)

    def start_scheduler(self, port: int | None = None, **overrides: str) -> subprocess.Popen[bytes]:
        return self.start("services.scheduler", port or self.scheduler_port, **overrides)

    def close(self) -> None:
        self.channel.close()
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(5)
        self.api.stop(0.5)

    # --- the API -------------------------------------------------------------------------------

    def create(
        self, name: str, schedule: pb.Schedule, target: pb.Target | None = None, **fields: object
    ) -> pb.Task:
        task = pb.Task(name=name, schedule=schedule, target=target or pb.Target(log=pb.LogTarget()), **fields)
        return self.stub.CreateTask(pb.CreateTaskRequest(task=task)).task

    def create_channel(self, channel: pb.Channel) -> str:
        """A notification channel created through AlertService: its id."""
        stub = pb.alert_service_grpc.AlertServiceStub(self.channel)
        return str(stub.CreateChannel(pb.CreateChannelRequest(channel=channel)).channel.id)

    def executions(self, task_id: str = "") -> list[pb.Execution]:
        out: list[pb.Execution] = []
        token = ""
        while True:
            page = self.stub.ListExecutions(
                pb.ListExecutionsRequest(task_id=task_id, page_size=1000, page_token=token)
            )
            out += page.executions
            token = page.next_page_token
            if not token:
                return out

    def wait_terminal(self, task_id: str, count: int, timeout: float = 15.0) -> list[pb.Execution]:
        def done() -> bool:
            found = self.executions(task_id)
            return len(found) >= count and all(e.status in TERMINAL for e in found)

        wait_for(done, timeout)
        return self.executions(task_id)


SuiteT = TypeVar("SuiteT", bound=Suite)


def service_argv(module: str) -> list[str]:
    """How tests launch a service; the container images run the same (tests/deploy checks it)."""
    return [sys.executable, "-m", module]


def _serving(port: int, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, f"service on port {port} exited with {proc.returncode}"
    return serving(port)


def once_in(seconds: float) -> pb.Schedule:
    ts = Timestamp()
    ts.FromMilliseconds(int((time.time() + seconds) * 1000))
    return pb.Schedule(once=pb.OneTimeSchedule(run_time=ts))


def every_second() -> pb.Schedule:
    return pb.Schedule(cron=pb.CronSchedule(expression="* * * * * *"))


def http(url: str, **fields: object) -> pb.Target:
    return pb.Target(http=pb.HttpTarget(url=url, **fields))


@contextlib.contextmanager
def suite(redis: RedisServer, schedulers: int = 1, executors: int = 1, **overrides: str) -> Iterator[Suite]:
    """The api in-process, executors and schedulers as processes; `overrides` are environment
    variables of the processes (PARTITIONS is given to the api as well: every service must agree)."""
    partitions = int(overrides.get("PARTITIONS", "1"))
    api = ServiceThread(build_api, api_settings(redis.url, partitions=partitions))
    with running(
        Suite(redis, api, free_port(), [free_port() for _ in range(executors)]), schedulers, **overrides
    ) as s:
        yield s


@contextlib.contextmanager
def running(s: SuiteT, schedulers: int, **overrides: str) -> Iterator[SuiteT]:
    """`s` with its executors and `schedulers` schedulers started (processes given `overrides`),
    closed after."""
    try:
        for port in s.executor_ports:
            s.start_executor(port, **overrides)
        for i in range(schedulers):
            s.start_scheduler(None if i == 0 else free_port(), **overrides)
        yield s
    finally:
        s.close()
