from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest

from schedcore import pb
from schedcore.settings import Settings
from services.api.app import build as build_api
from tests.support import RedisCluster, RedisServer, ServiceThread, redis_cluster, redis_server

# The suite's services run as in local development, both explicitly configured: plaintext gRPC
# and no authentication. Every service process a test starts inherits this environment; the tests
# of TLS and of authentication (docs/security.md) set their own.
os.environ.update(GRPC_PLAINTEXT="true", AUTH_MODE="none")


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


@pytest.fixture()
def rds(redis_srv: RedisServer):
    client = redis_srv.client()
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
def api(redis_srv: RedisServer, rds) -> Iterator[ServiceThread]:
    service = ServiceThread(build_api, api_settings(redis_srv.url))
    yield service
    service.stop()


@pytest.fixture()
def stub(api: ServiceThread) -> Iterator[pb.task_service_grpc.TaskServiceStub]:
    with grpc.insecure_channel(api.target) as channel:
        yield pb.task_service_grpc.TaskServiceStub(channel)
