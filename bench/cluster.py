"""A suite of real processes for a benchmark: Redis (AOF, appendfsync everysec), api, schedulers
and executors, wired the way tools/run_local.py wires them. Redis is one redis-server, or a Redis
Cluster of several primaries (tests.support.RedisCluster, no replicas) with the services given
REDIS_CLUSTER_NODES (docs/partitions.md, "Cluster mode")."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis as redis_py
from redis.crc import key_slot

from schedcore import pb
from schedcore.store.keys import Partitions
from tests.support import RedisCluster, RedisServer, free_port, serving

ROOT = Path(__file__).resolve().parents[1]
# Quiet services; everything else is the services' defaults (docs/configuration.md).
BASE_ENV = {
    "LOG_LEVEL": "WARNING",
    "SHUTDOWN_GRACE_SECONDS": "2",
    "GRPC_PLAINTEXT": "true",
    # As deployed: every api call carries a bearer token the api checks (docs/security.md).
    "AUTH_MODE": "token",
    # The benchmarks measure what one token and one namespace can push through (more calls per
    # second, more tasks and more calls in flight than the default quotas and limits allow):
    # those limits are off.
    "NAMESPACE_MAX_TASKS": "0",
    "API_RATE_LIMIT": "0",
    "API_MAX_CONCURRENT_RPCS": "0",
}


class BearerToken(grpc.UnaryUnaryClientInterceptor):
    """Adds the cluster's admin token to every unary call of a synchronous channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        details = details._replace(metadata=(*(details.metadata or ()), *self.metadata))
        return continuation(details, request)


@dataclass
class Proc:
    name: str
    port: int
    popen: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (from /proc)."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Cluster:
    """The suite. `partitions` is PARTITIONS; `primaries` 1 is one redis-server, more a Redis
    Cluster of that many primaries."""

    schedulers: int = 1
    executors: int = 1
    env: dict[str, str] = field(default_factory=dict)
    partitions: int = 1
    primaries: int = 1
    # With one primary: a replica of it (REPLICAOF), for what REDIS_WAIT_REPLICAS costs.
    replica: bool = False
    replica_server: RedisServer | None = field(init=False, default=None)
    redis: RedisServer | RedisCluster = field(init=False)
    procs: list[Proc] = field(default_factory=list)
    token: str = field(init=False, default="", repr=False)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata carrying the cluster's admin token (AUTH_BOOTSTRAP_TOKEN)."""
        return (("authorization", f"Bearer {self.token}"),)

    def channel(self, options: list[tuple[str, object]] | None = None) -> grpc.Channel:
        """A channel to the api whose every call carries the admin token."""
        plain = grpc.insecure_channel(self.api_addr, options=options or [])
        return grpc.intercept_channel(plain, BearerToken(self.metadata))

    def __enter__(self) -> Cluster:
        self.token = "tsk_" + secrets.token_urlsafe(32)
        # RedisCluster's nodes are RedisServers with the same settings (AOF, appendfsync everysec).
        if self.primaries > 1:
            self.redis = RedisCluster(masters=self.primaries)
        else:
            self.redis = RedisServer(appendfsync="everysec")
        self.api_port = free_port()
        executor_ports = [free_port() for _ in range(self.executors)]
        scheduler_ports = [free_port() for _ in range(self.schedulers)]
        wiring = {
            "REDIS_URL": self.redis.url,
            "PARTITIONS": str(self.partitions),
            "EXECUTOR_ADDRS": ",".join(f"127.0.0.1:{p}" for p in executor_ports),
            "SCHEDULER_ADDR": "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in scheduler_ports),
        }
        if isinstance(self.redis, RedisCluster):
            wiring["REDIS_CLUSTER_NODES"] = self.redis.seeds_env
        try:
            self.redis.start()
            if self.replica and isinstance(self.redis, RedisServer):
                of = ["--replicaof", "127.0.0.1", str(self.redis.port)]
                self.replica_server = RedisServer(appendfsync="everysec", extra_args=of)
                self.replica_server.start()
                self._wait_replicated()
            self._start("api", self.api_port, wiring)
            self._wait_for_token()
            for i, port in enumerate(executor_ports):
                self._start(f"executor-{i + 1}", port, wiring)
            for i, port in enumerate(scheduler_ports):
                self._start(f"scheduler-{i + 1}", port, wiring)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, name: str, port: int, wiring: dict[str, str]) -> None:
        module = "services." + name.split("-")[0]
        env = dict(
            os.environ,
            **BASE_ENV,
            AUTH_BOOTSTRAP_TOKEN=self.token,
            **wiring,
            **self.env,
            GRPC_HOST="127.0.0.1",
            GRPC_PORT=str(port),
        )
        popen = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env)
        proc = Proc(name, port, popen)
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while not serving(port):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start (exit status {popen.poll()})")
            time.sleep(0.05)

    def reset(self) -> None:
        """Empty Redis between workloads, except what the services write once at start and never
        again (the api's tokens from AUTH_BOOTSTRAP_TOKEN, the page-token secret, the recorded
        PARTITIONS) and the schedulers' membership and partition leases, which they renew."""
        parts = Partitions(count=self.partitions)
        home = parts.home
        keep = (home.token(""), home.token_hash(""), home.tokens, home.page_token_secret)
        keep_exact = {home.partition_count, home.schedulers, *(k.owner for k in parts.all)}
        for client in self.primary_clients():
            try:
                doomed = [
                    k
                    for k in client.scan_iter(count=10_000)
                    if not k.decode().startswith(keep) and k.decode() not in keep_exact
                ]
                # One key per command: on a cluster node a DEL of keys in several slots is refused.
                for i in range(0, len(doomed), 1000):
                    pipe = client.pipeline(transaction=False)
                    for key in doomed[i : i + 1000]:
                        pipe.unlink(key)
                    pipe.execute()
            finally:
                client.close()

    def _wait_for_token(self) -> None:
        """The api writes AUTH_BOOTSTRAP_TOKEN once Redis answers: wait until it accepts it."""
        deadline = time.monotonic() + 30
        with self.channel() as channel:
            who_am_i = pb.auth_service_grpc.AuthServiceStub(channel).WhoAmI
            while True:
                try:
                    who_am_i(pb.WhoAmIRequest(), timeout=1)
                    return
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGKILL)
                proc.popen.wait(10)
        if self.replica_server is not None:
            self.replica_server.cleanup()
        self.redis.cleanup()

    def _wait_replicated(self) -> None:
        """Until the primary counts its replica as connected."""
        deadline = time.monotonic() + 30
        client = self.client()
        try:
            while client.info("replication").get("connected_slaves", 0) < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not connect")
                time.sleep(0.05)
        finally:
            client.close()

    @property
    def api_addr(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    @property
    def servers(self) -> list[RedisServer]:
        """The Redis primaries: the one redis-server, or the cluster's primaries in slot order."""
        return list(self.redis.masters) if isinstance(self.redis, RedisCluster) else [self.redis]

    def client(self) -> redis_py.Redis:
        """A client of the redis-server (with a Redis Cluster, of its first primary only)."""
        return self.servers[0].client()

    def primary_clients(self) -> list[redis_py.Redis]:
        """A plain client of each primary (each sees only its own keys), in `servers` order."""
        return [server.client() for server in self.servers]

    def primary_of(self, partition: int) -> int:
        """Index in `servers` of the primary serving `partition`'s keys (one slot: `{p}`)."""
        if not isinstance(self.redis, RedisCluster):
            return 0
        slot = key_slot(Partitions(count=self.partitions).all[partition].owner.encode())
        return self.servers.index(self.redis.owner(slot))

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process, Redis included ("redis", or with several
        primaries "redis-1", "redis-2", ...)."""
        out = {p.name: p.cpu_seconds() for p in self.procs}
        servers = self.servers
        for i, server in enumerate(servers):
            assert server.proc is not None
            name = "redis" if len(servers) == 1 else f"redis-{i + 1}"
            out[name] = Proc(name, server.port, server.proc).cpu_seconds()
        return out
