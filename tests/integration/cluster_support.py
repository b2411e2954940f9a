"""The engine suite on a Redis Cluster (tests/integration/test_cluster_*.py): the api in-process
and a scheduler and an executor as processes, all given the cluster's nodes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import grpc

from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.engine_support import Suite
from tests.support import RedisCluster, RedisServer, ServiceThread, free_port


def cluster_api(cluster: RedisCluster, partitions: int, **settings: object) -> ServiceThread:
    """The api on `cluster`; `settings` are more fields of its Settings."""
    return ServiceThread(
        build_api,
        api_settings(cluster.url, redis_cluster_nodes=cluster.seeds, partitions=partitions, **settings),
    )


@contextlib.contextmanager
def cluster_suite(
    cluster: RedisCluster, partitions: int, api: dict[str, object] | None = None, **overrides: str
) -> Iterator[Suite]:
    """engine_support.suite on a cluster: the api in-process (`api`: more of its settings), an
    executor and a scheduler as processes given REDIS_CLUSTER_NODES (`overrides`: more of their
    environment)."""
    env = {"REDIS_CLUSTER_NODES": cluster.seeds_env, "PARTITIONS": str(partitions), **overrides}
    s = Suite(cluster, cluster_api(cluster, partitions, **(api or {})), free_port(), [free_port()])  # type: ignore[arg-type]
    try:
        s.start_executor(s.executor_ports[0], **env)
        s.start_scheduler(**env)
        yield s
    finally:
        s.close()


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    """The status `call` ends with (OK when it returns)."""
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def cluster_state(node: RedisServer) -> str:
    """`node`'s cluster_state: ok, or fail (some slot unserved, as that node sees it)."""
    with contextlib.closing(node.client()) as client:
        info = client.execute_command("CLUSTER", "INFO").decode()
    return dict(line.split(":", 1) for line in info.split() if ":" in line)["cluster_state"]
