"""Test support: real redis-server processes on free ports, and services served in-process."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schedcore.server import GrpcService
from schedcore.settings import Settings


def serving(port: int) -> bool:
    """Whether the gRPC server on 127.0.0.1:`port` answers SERVING to a health check."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


# Ports come from below Linux's default ephemeral range (32768-60999), so no outgoing connection
# can take one between free_port() and the service's bind, and none is handed out twice in a
# process: bind(0) may give back a port it gave a moment ago, and two services told the same port
# look healthy (the first one answers the second one's health check) while the second has exited.
_PORTS = range(20000, 32768)
_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on and this process has not handed out before."""
    with _ports_lock:
        for _ in range(1000):
            port = random.choice(_PORTS)
            if port in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {_PORTS.start}-{_PORTS.stop - 1} after 1000 tries")


class RedisServer:
    """A redis-server of our own: its own port and data folder, append-only file on."""

    def __init__(self, appendfsync: str = "everysec") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run `make deps` (apt-get install redis-server)"
            )
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="test-redis-"))
        self.port = free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                # As deployed (docs/redis-layout.md, Memory): a task's hash stays compact.
                "--hash-max-listpack-value",
                "512",
                "--daemonize",
                "no",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server did not start: {(self.dir / 'redis.log').read_text()}"
                    ) from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ServiceThread:
    """Runs a GrpcService on its own event loop in a background thread (tests stay synchronous)."""

    def __init__(self, build: Callable[[Settings], Awaitable[GrpcService]], settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.service: GrpcService = self.run(build(settings))
        self.port: int = self.run(self.service.start())

    def run(self, coro: Awaitable[object]) -> any:  # type: ignore[valid-type]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace: float = 1.0) -> None:
        with contextlib.suppress(Exception):
            self.run(self.service.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


@contextlib.contextmanager
def redis_server(appendfsync: str = "everysec") -> Iterator[RedisServer]:
    server = RedisServer(appendfsync)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
