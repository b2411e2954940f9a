"""A whole suite as separate processes on loopback, for fault injection: a redis-server with its
append-only file, the sink, and 2 api, 2 scheduler and 2 executor replicas. Every process can be
killed (any signal), paused and started again; each remembers its pids, so a scenario can show
that nothing restarted but what it restarted itself."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schedcore import pb
from tests.sink import Sink
from tests.support import RedisServer, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Short leases and polls keep scenarios quick (5 s, not less: on a loaded 2-core machine a burst
# of 200 executions can take longer than a 2 s lease to reach their targets, and the lease expiry
# then runs them again); all variables are schedcore/settings.py's.
BASE_ENV = {
    "LEASE_SECONDS": "5",
    "POLL_INTERVAL_SECONDS": "0.02",
    "HEALTH_INTERVAL_SECONDS": "0.2",
    "REDIS_TIMEOUT_SECONDS": "1",
    "SHUTDOWN_GRACE_SECONDS": "5",
    "MISSED_TOLERANCE_SECONDS": "10",
    "LOG_LEVEL": "WARNING",
}


def libfaketime() -> str:
    """Path of libfaketime (Debian package `faketime`), to shift one process' clock."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        raise RuntimeError("libfaketime is not installed: apt-get install -y faketime (.ci/run does)")
    return found[0]


@dataclass
class Replica:
    """One service process: its module, port and environment, and every pid it ever had."""

    name: str
    module: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)
    faulted: bool = False  # the scenario killed or stopped it on purpose

    def spawn(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], cwd=ROOT, env=self.env)
        self.pids.append(self.proc.pid)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self) -> int | None:
        with grpc.insecure_channel(self.target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return None
        return int(reply.status)

    def wait_serving(self, timeout: float = 30.0) -> None:
        def serving() -> bool:
            assert self.alive(), f"{self.name} exited with {self.proc.returncode if self.proc else None}"
            return self.health() == SERVING

        wait_for(serving, timeout, 0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.faulted = True
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def terminate(self, timeout: float) -> int:
        """SIGTERM and wait for the exit; returns the exit status."""
        self.signal(signal.SIGTERM)
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop_quietly(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


class FaultRedis(RedisServer):
    """The suite's Redis: restarted on the same port and folder, so the append-only file is read
    back; killed, terminated or paused like any other process."""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.start()


@dataclass
class Cluster:
    redis: FaultRedis
    sink: Sink
    replicas: dict[str, Replica]
    overrides: dict[str, str]

    @property
    def apis(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.module == "services.api"]

    @property
    def schedulers(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.module == "services.scheduler"]

    @property
    def executors(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.module == "services.executor"]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.redis.port, socket_timeout=30)

    def stub(
        self, replica: Replica | None = None
    ) -> tuple[grpc.Channel, pb.task_service_grpc.TaskServiceStub]:
        channel = grpc.insecure_channel((replica or self.apis[0]).target)
        return channel, pb.task_service_grpc.TaskServiceStub(channel)

    def now_ms(self) -> int:
        """The one clock: Redis' TIME."""
        client = self.client()
        try:
            seconds, micros = client.time()
        finally:
            client.close()
        return int(seconds) * 1000 + int(micros) // 1000

    def start(self, replicas: list[Replica]) -> None:
        """Start processes together (they take a second each to import), then wait for each."""
        for replica in replicas:
            replica.spawn()
        for replica in replicas:
            replica.wait_serving()

    def restart(self, *replicas: Replica) -> None:
        self.start(list(replicas))

    def unexpected_restarts(self) -> list[str]:
        """Replicas the scenario left alone that are not still their first process."""
        return [
            r.name for r in self.replicas.values() if not r.faulted and (len(r.pids) != 1 or not r.alive())
        ]

    def dead(self) -> list[str]:
        return [r.name for r in self.replicas.values() if not r.alive()]

    def close(self) -> None:
        for replica in self.replicas.values():
            replica.stop_quietly()
        self.sink.close()
        self.redis.cleanup()


@contextlib.contextmanager
def cluster(
    *,
    appendfsync: str = "everysec",
    engine: bool = True,
    env: dict[str, str] | None = None,
    scheduler_env: list[dict[str, str]] | None = None,
) -> Iterator[Cluster]:
    """Redis, the sink and the replicas, each SERVING. `engine=False`: the api replicas only.
    `scheduler_env`: extra variables for each scheduler replica (e.g. libfaketime)."""
    red = FaultRedis(appendfsync)
    red.start()
    sink = Sink()
    overrides = {**BASE_ENV, **(env or {})}
    ports = {
        name: free_port()
        for name in ("api-0", "api-1", "scheduler-0", "scheduler-1", "executor-0", "executor-1")
    }
    executors = ",".join(f"127.0.0.1:{ports[f'executor-{i}']}" for i in range(2))
    schedulers = "ipv4:" + ",".join(f"127.0.0.1:{ports[f'scheduler-{i}']}" for i in range(2))

    def replica(name: str, module: str, extra: dict[str, str] | None = None) -> Replica:
        process_env = dict(
            os.environ,
            **overrides,
            REDIS_URL=red.url,
            GRPC_HOST="127.0.0.1",
            GRPC_PORT=str(ports[name]),
            EXECUTOR_ADDRS=executors,
            SCHEDULER_ADDR=schedulers,
            INSTANCE_ID=name,
        )
        process_env.update(extra or {})
        return Replica(name, module, ports[name], process_env)

    replicas = {name: replica(name, "services.api") for name in ("api-0", "api-1")}
    if engine:
        for i in range(2):
            extra = scheduler_env[i] if scheduler_env else None
            replicas[f"scheduler-{i}"] = replica(f"scheduler-{i}", "services.scheduler", extra)
            replicas[f"executor-{i}"] = replica(f"executor-{i}", "services.executor")
    c = Cluster(red, sink, replicas, overrides)
    try:
        c.start(list(replicas.values()))
        yield c
    finally:
        c.close()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Like support.wait_for, but answers instead of failing (for figures)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
