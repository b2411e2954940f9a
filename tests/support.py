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
from collections.abc import Awaitable, Callable, Iterator, Sequence
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

    def __init__(self, appendfsync: str = "everysec", extra_args: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run `make deps` (apt-get install redis-server)"
            )
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="test-redis-"))
        self.port = free_port()
        self.appendfsync = appendfsync
        self.extra_args = list(extra_args)
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
                *self.extra_args,
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


CLUSTER_SLOTS = 16384


class RedisCluster:
    """A Redis Cluster of our own: `masters` primaries with `replicas` replicas each, real
    redis-server processes (cluster-enabled) on free ports, the slots split evenly over the
    primaries in order (primary i serves the i-th range). Built by hand with CLUSTER commands
    (ADDSLOTS, MEET, REPLICATE: what `redis-cli --cluster create` sends), so no other tool is
    needed. `node_timeout_ms` is cluster-node-timeout: how soon a lost primary counts as failed
    (and its replica is promoted)."""

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        # Each node's cluster bus port is a free port too (by default it is the port + 10000,
        # which may be another node's port or taken).
        self.bus_ports: dict[int, int] = {}

        def node() -> RedisServer:
            bus = free_port()
            server = RedisServer(
                extra_args=[
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    *("--cluster-node-timeout", str(node_timeout_ms), "--cluster-port", str(bus)),
                    *("--repl-diskless-sync-delay", "0"),
                ]
            )
            self.bus_ports[server.port] = bus
            return server

        self.masters = [node() for _ in range(masters)]
        self.replicas = [node() for _ in range(masters * replicas)]
        self.nodes = self.masters + self.replicas

    @property
    def url(self) -> str:
        """REDIS_URL of a service using the cluster: its credentials only (none here)."""
        return f"redis://127.0.0.1:{self.masters[0].port}/0"

    @property
    def seeds(self) -> tuple[tuple[str, int], ...]:
        """Settings.redis_cluster_nodes: every node."""
        return tuple(("127.0.0.1", node.port) for node in self.nodes)

    @property
    def seeds_env(self) -> str:
        """REDIS_CLUSTER_NODES for a service process."""
        return ",".join(f"{host}:{port}" for host, port in self.seeds)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        clients = [node.client() for node in self.nodes]
        try:
            for i, client in enumerate(clients):
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            for i, client in enumerate(clients[: len(self.masters)]):
                low = i * CLUSTER_SLOTS // len(self.masters)
                high = (i + 1) * CLUSTER_SLOTS // len(self.masters)
                client.execute_command("CLUSTER", "ADDSLOTS", *range(low, high))
            for node in self.nodes[1:]:
                clients[0].execute_command(
                    "CLUSTER", "MEET", "127.0.0.1", node.port, self.bus_ports[node.port]
                )
            wait_for(
                lambda: all(_info(c)["cluster_known_nodes"] == str(len(self.nodes)) for c in clients), 20
            )
            ids = [c.execute_command("CLUSTER", "MYID").decode() for c in clients[: len(self.masters)]]
            for i, client in enumerate(clients[len(self.masters) :]):
                client.execute_command("CLUSTER", "REPLICATE", ids[i % len(self.masters)])
        finally:
            for client in clients:
                client.close()
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says cluster_state:ok with every slot served, and agrees on
        who serves them; every replica's link to its primary is up."""

        def ok() -> bool:
            layouts = set()
            for node in self.running():
                with contextlib.closing(node.client()) as client:
                    try:
                        info = _info(client)
                        layouts.add(_layout(client))
                        role = client.info("replication")
                    except redis.RedisError:
                        return False
                if info["cluster_state"] != "ok" or info["cluster_slots_ok"] != str(CLUSTER_SLOTS):
                    return False
                if role["role"] == "slave" and role.get("master_link_status") != "up":
                    return False
            return len(layouts) == 1

        wait_for(ok, timeout, 0.1)

    def running(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.proc is not None and node.proc.poll() is None]

    def owner(self, slot: int) -> RedisServer:
        """The node serving `slot` now (by a running node's CLUSTER SLOTS)."""
        with contextlib.closing(self.running()[0].client()) as client:
            port = next(port for low, high, port in _layout(client) if low <= slot <= high)
        return next(node for node in self.nodes if node.port == port)

    def primaries(self) -> list[RedisServer]:
        """The running nodes that are primaries now (a promoted replica among them)."""
        found = []
        for node in self.running():
            with contextlib.closing(node.client()) as client:
                if client.info("replication")["role"] == "master":
                    found.append(node)
        return found

    def migrate_slot(self, slot: int, to: RedisServer, batch: int = 10, pause_s: float = 0.0) -> int:
        """Move `slot` from its primary to the primary `to` while clients use it, as
        `redis-cli --cluster reshard` does: `to` IMPORTING it and its owner MIGRATING it, its keys
        MIGRATEd `batch` at a time (KEYS, REPLACE; `pause_s` after each batch) until the owner
        has none left, then CLUSTER SETSLOT NODE on every primary (`to`, the owner, the others).
        Meanwhile the owner answers ASK for keys already moved, and TRYAGAIN to a command whose
        keys are split between the two. Returns how many keys moved."""
        source = self.owner(slot)
        if source is to:
            raise ValueError(f"slot {slot} is already on 127.0.0.1:{to.port}")
        with contextlib.closing(source.client()) as src, contextlib.closing(to.client()) as dst:
            source_id = src.execute_command("CLUSTER", "MYID").decode()
            target_id = dst.execute_command("CLUSTER", "MYID").decode()
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            moved = 0
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
                src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 10_000, "REPLACE", "KEYS", *keys)
                moved += len(keys)
                time.sleep(pause_s)
        others = [node for node in self.primaries() if node not in (to, source)]
        for node in (to, source, *others):
            with contextlib.closing(node.client()) as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def flush(self) -> None:
        """Empty every primary (replicas follow)."""
        for node in self.running():
            with contextlib.closing(node.client()) as client:
                if client.info("replication")["role"] == "master":
                    client.flushall()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


def _info(client: redis.Redis) -> dict[str, str]:
    raw = client.execute_command("CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def _layout(client: redis.Redis) -> tuple[tuple[int, int, int], ...]:
    """(first slot, last slot, port of the primary) of every served range, as `client` sees it."""
    ranges = client.execute_command("CLUSTER", "SLOTS")
    return tuple(sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in ranges))


@contextlib.contextmanager
def redis_cluster(masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> Iterator[RedisCluster]:
    cluster = RedisCluster(masters, replicas, node_timeout_ms)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
