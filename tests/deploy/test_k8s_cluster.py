"""deploy/k8s on an external Redis Cluster (components/redis-cluster, overlays/cluster;
docs/deploy.md, "Redis Cluster"): no Redis of our own, the api and the scheduler (only they) told
where the cluster is, a partition count that suits it, and the rendered configuration starting
the api and the scheduler against a real cluster, their probes following its primaries."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.crc import key_slot

from schedcore import redisconn
from schedcore.server import LIVENESS_SERVICE
from schedcore.settings import Settings
from schedcore.store.keys import MAX_PARTITIONS, Keys
from tests.deploy.manifests import EXTERNAL_REDIS, ROOT, Rendered, render
from tests.support import RedisCluster, free_port, redis_cluster, wait_for
from tests.tls_support import Pki

REDIS_USERS = ("api", "scheduler")  # the executor and the ui never connect to Redis
NODES_CONFIG = "scheduler-suite-redis-cluster"
TLS_DIR = "/etc/scheduler-suite/tls"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CLUSTER_SLOTS = 16384


def test_the_cluster_overlay_is_the_one_with_an_external_redis() -> None:
    assert EXTERNAL_REDIS == ("cluster",)


def test_no_redis_of_our_own() -> None:
    m = render("cluster")
    assert [(d["kind"], d["metadata"]["name"]) for d in m.docs if d["metadata"]["name"] == "redis"] == []
    assert m.all("StatefulSet") == [] and m.all("PersistentVolumeClaim") == []
    assert "redis:6379" not in str(m.docs)  # nothing left pointing at the in-cluster Service
    secret = m.get("Secret", "scheduler-suite-redis")["stringData"]
    assert set(secret) == {"REDIS_URL"}  # no REDIS_PASSWORD: no Redis of ours to give it to


def _settings(m: Rendered, name: str) -> Settings:
    """What `name` parses from its rendered environment, REDIS_URL taken from the Secret."""
    env = {k: v for k, v in m.env(name).items() if v is not None}
    env["REDIS_URL"] = m.get("Secret", "scheduler-suite-redis")["stringData"]["REDIS_URL"]
    return Settings.from_env(env, service=name)


def test_the_api_and_the_scheduler_use_the_cluster_named_in_the_configmap() -> None:
    m = render("cluster")
    seeds = m.get("ConfigMap", NODES_CONFIG)["data"]["REDIS_CLUSTER_NODES"]
    for name in REDIS_USERS:
        (var,) = [v for v in m.container(name)["env"] if v["name"] == "REDIS_CLUSTER_NODES"]
        assert var["valueFrom"] == {"configMapKeyRef": {"name": NODES_CONFIG, "key": "REDIS_CLUSTER_NODES"}}
        (url,) = [v for v in m.container(name)["env"] if v["name"] == "REDIS_URL"]
        assert url["valueFrom"]["secretKeyRef"] == {"name": "scheduler-suite-redis", "key": "REDIS_URL"}
        settings = _settings(m, name)
        assert len(settings.redis_cluster_nodes) == len(seeds.split(",")) >= 2  # more than one seed
        assert settings.redis_sentinels == ()
        assert urlparse(settings.redis_url).path in ("", "/", "/0")  # Redis Cluster has database 0 only
        client = redisconn.connect(settings)
        assert isinstance(client, redisconn.StoreRedisCluster)
        asyncio.run(client.aclose())
    for name in ("executor", "ui"):  # not told where Redis is, nor how to log in
        assert "REDIS_CLUSTER_NODES" not in m.env(name) and "REDIS_URL" not in m.env(name)
        assert NODES_CONFIG not in str(m.container(name)) and "scheduler-suite-redis" not in str(
            m.container(name)
        )


def test_partitions_and_schedulers_suit_the_cluster() -> None:
    """PARTITIONS is one count for every replica (the shared ConfigMap), within its limits, at
    least four per scheduler replica (ownership spreads only when P is well above the replicas),
    with a partition lease the scheduler accepts (under half of MISSED_TOLERANCE_SECONDS)."""
    m = render("cluster")
    counts = {name: _settings(m, name).partitions for name in REDIS_USERS}
    (partitions,) = set(counts.values())
    assert partitions == int(m.get("ConfigMap", "scheduler-suite-config")["data"]["PARTITIONS"])
    assert 1 < partitions <= MAX_PARTITIONS
    replicas = m.workload("scheduler")["spec"]["replicas"]
    assert replicas >= 2 and partitions >= 4 * replicas
    scheduler = _settings(m, "scheduler")
    assert scheduler.partition_lease_s * 2 < scheduler.missed_tolerance_s
    # Not autoscaled: every join or leave moves partitions between replicas.
    assert "scheduler" not in {h["spec"]["scaleTargetRef"]["name"] for h in m.all("HorizontalPodAutoscaler")}


def _primary_of(slot: int, primaries: int) -> int:
    """Which of `primaries` primaries serving equal slot ranges in order serves `slot` (how
    tests.support.RedisCluster splits them; `redis-cli --cluster create` differs by a slot at
    some boundaries)."""
    return next(i for i in range(primaries) if slot < (i + 1) * CLUSTER_SLOTS // primaries)


def _slot(partition: int) -> int:
    return key_slot(Keys("ts", str(partition)).owner.encode())


def _spread(partitions: int, primaries: int) -> list[int]:
    """Partitions per primary when `primaries` primaries serve equal slot ranges in order."""
    served = Counter(_primary_of(_slot(p), primaries) for p in range(partitions))
    return [served[i] for i in range(primaries)]


def test_partition_slots_fall_unevenly_over_equal_slot_ranges() -> None:
    """docs/deploy.md, "Choosing P": a partition's slot is fixed by the hash of its tag, so equal
    slot ranges do not give every primary the same number of partitions."""
    assert _spread(12, 3) == [4, 5, 3]
    assert _spread(12, 6) == [3, 1, 2, 3, 0, 3]
    # The prefix does not matter: the slot is the hash of the tag {p} alone.
    assert key_slot(Keys("other", "7").owner.encode()) == key_slot(b"{7}")


# --- the rendered configuration against a real Redis Cluster ---------------------------------


def kubelet_probe(port: int, service: str) -> int:
    """What `grpc: {port, service}` does: a plaintext Health/Check, no credentials."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(ch).Check(request, timeout=2).status


def probe_or_none(port: int, service: str = "") -> int | None:
    try:
        return kubelet_probe(port, service)
    except grpc.RpcError:
        return None


@contextlib.contextmanager
def service(
    name: str, m: Rendered, cluster: RedisCluster, pki: Pki
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`name` started with its rendered environment: the test CA's files where the Secret would
    be mounted, the test cluster's nodes as REDIS_CLUSTER_NODES, its (empty) credentials as
    REDIS_URL. Yields the process and its health port."""
    issued = pki.issue()
    files = {
        f"{TLS_DIR}/tls.crt": str(issued.cert),
        f"{TLS_DIR}/tls.key": str(issued.key),
        f"{TLS_DIR}/ca.crt": str(pki.ca_file),
    }
    env = {k: files.get(v, v) for k, v in m.env(name).items() if v is not None}
    assert env["REDIS_CLUSTER_NODES"] and env["PARTITIONS"]
    health_port = free_port()
    env.update(
        PATH="/usr/bin:/bin",
        GRPC_HOST="127.0.0.1",
        GRPC_PORT=str(free_port()),
        HEALTH_PORT=str(health_port),
        METRICS_PORT="0",
        REDIS_CLUSTER_NODES=cluster.seeds_env,  # the ConfigMap's value in the cluster
        REDIS_URL=cluster.url,  # the Secret's
        EXECUTOR_ADDRS=f"127.0.0.1:{free_port()}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc, health_port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_the_rendered_api_and_scheduler_run_on_a_redis_cluster_and_their_probes_follow_it(
    tmp_path: Path,
) -> None:
    m = render("cluster")
    partitions = int(m.get("ConfigMap", "scheduler-suite-config")["data"]["PARTITIONS"])
    pki = Pki(tmp_path)
    with (
        redis_cluster(masters=3) as cluster,
        service("api", m, cluster, pki) as (api, api_health),
        service("scheduler", m, cluster, pki) as (scheduler, scheduler_health),
    ):
        procs = {"api": api, "scheduler": scheduler}
        health = {"api": api_health, "scheduler": scheduler_health}

        def all_probes(status: int) -> bool:
            for name, proc in procs.items():
                assert proc.poll() is None, (name, proc.stderr.read() if proc.stderr else b"")
            return all(probe_or_none(port) == status for port in health.values())

        wait_for(lambda: all_probes(SERVING), timeout=30, interval=0.2)
        client = redis.RedisCluster(host="127.0.0.1", port=cluster.masters[0].port)
        try:
            assert client.get(Keys("ts", "0").partition_count) == str(partitions).encode()
            # The one scheduler owns every partition, each lease on its own partition's slot.
            owners = lambda: [client.get(Keys("ts", str(p)).owner) for p in range(partitions)]  # noqa: E731
            wait_for(lambda: None not in owners() and len(set(owners())) == 1, timeout=15, interval=0.2)
        finally:
            client.close()
        # Where the partitions are: as _spread (docs/deploy.md, "Choosing P") counts them.
        for p in range(partitions):
            assert cluster.owner(_slot(p)) is cluster.masters[_primary_of(_slot(p), 3)], p
        # A primary lost (no replica to promote): readiness NOT_SERVING on both, liveness stays
        # SERVING (no restart); both SERVING again by themselves once it is back.
        victim = cluster.masters[1]
        victim.stop()
        wait_for(lambda: all_probes(NOT_SERVING), timeout=15, interval=0.2)
        assert all(kubelet_probe(port, LIVENESS_SERVICE) == SERVING for port in health.values())
        victim.start()
        cluster.wait_ok()
        wait_for(lambda: all_probes(SERVING), timeout=30, interval=0.2)
