from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import grpc
import pytest
import redis
import redis.cluster

from schedcore import pb
from schedcore.settings import Settings
from schedcore.store.keys import Keys, Partitions
from services.api.app import build as build_api
from tests.support import RedisCluster, RedisServer, ServiceThread, redis_cluster, redis_server

# The suite's services run as in local development, both explicitly configured: plaintext gRPC
# and no authentication. Every service process a test starts inherits this environment; the tests
# of TLS and of authentication (docs/security.md) set their own.
os.environ.update(GRPC_PLAINTEXT="true", AUTH_MODE="none")

# The layouts a module's tests run on when it opts in (docs/partitions.md, "Tests this design
# needs"): one redis-server or a 3-primary Redis Cluster, with one partition or four.
BACKENDS = ("single-P1", "single-P4", "cluster-P1", "cluster-P4")
DEFAULT_BACKEND = "single-P1"  # every test of a module that did not opt in, as before backends


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends(*names): run the tests that use `backend` (directly or through rds, api, stub,"
        " backend_api, backend_stub) once per named backend, all of BACKENDS when none is named"
        " (tests/conftest.py)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module (or test) opts in with `pytestmark = pytest.mark.backends()`: each of its tests
    that reaches `backend` runs once per backend, grouped by backend (so a module-scoped api
    starts once per backend). Tests that do not reach `backend` run once, as before."""
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is None or "backend" not in metafunc.fixturenames:
        return
    names = marker.args or BACKENDS
    unknown = [n for n in names if _layout(n) is None]
    assert not unknown, f"unknown backends {unknown}: names are single-P<n> or cluster-P<n>"
    metafunc.parametrize("backend", names, indirect=True, scope="module")


def _layout(name: str) -> tuple[str, int] | None:
    kind, _, count = name.partition("-P")
    if kind not in ("single", "cluster") or not count.isdigit():
        return None
    return kind, int(count)


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    """One redis-server for the session; tests that kill or stop Redis start their own."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_srv() -> Iterator[RedisCluster]:
    """One Redis Cluster for the session (3 primaries, a replica each); tests that stop or kill
    a node start their own."""
    with redis_cluster(masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture()
def cluster(redis_cluster_srv: RedisCluster) -> RedisCluster:
    """The session's cluster, emptied."""
    redis_cluster_srv.flush()
    return redis_cluster_srv


SyncClient = redis.Redis | redis.cluster.RedisCluster


@dataclass(frozen=True)
class Backend:
    """Where a test's services keep their data: the session's redis-server or its Redis Cluster,
    laid out in `partitions` partitions. Services get their settings (`settings`, `env`) here, and
    tests that read keys find them through `parts`, in the partition the task's id names."""

    name: str
    server: RedisServer | RedisCluster
    partitions: int

    @property
    def cluster(self) -> bool:
        return isinstance(self.server, RedisCluster)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def parts(self) -> Partitions:
        return Partitions("ts", self.partitions)

    def settings(self, **overrides: object) -> Settings:
        """An api's settings on this backend (api_settings, with its partitions and seeds)."""
        layout: dict[str, object] = {"partitions": self.partitions}
        if isinstance(self.server, RedisCluster):
            layout["redis_cluster_nodes"] = self.server.seeds
        return api_settings(self.url, **{**layout, **overrides})

    def env(self) -> dict[str, str]:
        """A service process's environment on this backend."""
        out = {"REDIS_URL": self.url, "PARTITIONS": str(self.partitions)}
        if isinstance(self.server, RedisCluster):
            out["REDIS_CLUSTER_NODES"] = self.server.seeds_env
        return out

    def client(self) -> SyncClient:
        """A synchronous client of the whole backend (on a cluster, one that follows slots)."""
        if not isinstance(self.server, RedisCluster):
            return self.server.client()
        client = redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode("127.0.0.1", m.port) for m in self.server.masters]
        )
        # KEYS asks every primary and merges the replies, as one server answers it (redis-py sends
        # it to a random node); FLUSHALL already goes to every primary.
        client.command_flags["KEYS"] = redis.cluster.RedisCluster.PRIMARIES
        return client

    # --- keys, wherever the layout puts them -------------------------------------------------

    def task_keys(self, task_id: str) -> Keys:
        """The keys of the partition holding the task `task_id`."""
        return self.parts.task(task_id)

    def task_key(self, task_id: str) -> str:
        return self.parts.task(task_id).task(task_id)

    def execution_key(self, execution_id: str) -> str:
        return self.parts.execution(execution_id).execution(execution_id)

    # A key "in every partition" is named by a Keys attribute ("by_name") or built from a
    # partition's Keys (lambda keys: keys.task_history(task_id)).

    def zcard(self, rds: Any, key: KeyOf) -> int:
        """The members of one sorted set, counted over every partition."""
        return sum(int(rds.zcard(_key_of(key)(keys))) for keys in self.parts.all)

    def zrange(self, rds: Any, key: KeyOf) -> list[bytes]:
        """Every partition's members of one sorted set, partition 0's first."""
        return [m for keys in self.parts.all for m in rds.zrange(_key_of(key)(keys), 0, -1)]

    def keys(self, rds: Any, pattern: KeyOf) -> list[bytes]:
        """The keys matching one pattern in every partition, sorted."""
        return sorted(k for keys in self.parts.all for k in rds.keys(_key_of(pattern)(keys)))


KeyOf = str | Callable[[Keys], str]


def _key_of(key: KeyOf) -> Callable[[Keys], str]:
    return attrgetter(key) if isinstance(key, str) else key


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> Backend:
    """The backend of the test: one of BACKENDS in a module that opted in (pytest_generate_tests
    parametrises it), the session's redis-server with one partition everywhere else. The servers
    are the session's: the cluster starts only when a test needs it."""
    name = getattr(request, "param", DEFAULT_BACKEND)
    layout = _layout(name)
    assert layout is not None, name
    kind, partitions = layout
    server = request.getfixturevalue("redis_srv" if kind == "single" else "redis_cluster_srv")
    return Backend(name, server, partitions)


@pytest.fixture()
def rds(backend: Backend) -> Iterator[Any]:
    """A client of the test's backend, on emptied data (redis.Redis on one server,
    redis.cluster.RedisCluster on the cluster)."""
    client = backend.client()
    client.flushall()
    yield client
    # After too: a module-scoped service that starts next must not find this test's data (the
    # partition count a PARTITIONS=8 test recorded would make a one-partition api exit).
    client.flushall()
    client.close()


def api_settings(redis_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        redis_url=redis_url,
        grpc_host="127.0.0.1",
        grpc_plaintext=True,  # as GRPC_PLAINTEXT=true: the TLS tests set up their own
        grpc_port=0,
        health_interval_s=0.1,
        redis_timeout_s=1.0,
        shutdown_grace_s=1.0,
        # The dataclass default is "token" (secure by default); the suite runs as in development
        # unless a test asks for tokens (api_settings(..., auth_mode="token")).
        auth_mode="none",
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture()
def api(backend: Backend, rds: Any) -> Iterator[ServiceThread]:
    service = ServiceThread(build_api, backend.settings())
    yield service
    service.stop()


@pytest.fixture()
def stub(api: ServiceThread) -> Iterator[pb.task_service_grpc.TaskServiceStub]:
    with grpc.insecure_channel(api.target) as channel:
        yield pb.task_service_grpc.TaskServiceStub(channel)


# A module whose tests share one api (as helpers.api: started once per module, here once per
# module and backend) takes these under the usual names: `api = backend_api`, `stub = backend_stub`.


@pytest.fixture(scope="module")
def backend_api(backend: Backend) -> Iterator[ServiceThread]:
    """The api on the backend, started once per module and backend. Like helpers.api it holds no
    state besides its connection pool and the page-token secret read at start, so tests flushing
    the data in between (through `rds`) are as independent as with a fresh api."""
    service = ServiceThread(build_api, backend.settings())
    yield service
    service.stop()


@pytest.fixture()
def backend_stub(backend_api: ServiceThread, rds: Any) -> Iterator[pb.task_service_grpc.TaskServiceStub]:
    """A TaskService client of `backend_api`; the data emptied before the test (by `rds`)."""
    with grpc.insecure_channel(backend_api.target) as channel:
        yield pb.task_service_grpc.TaskServiceStub(channel)
