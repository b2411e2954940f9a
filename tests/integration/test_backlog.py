"""The backlog gauges (services/scheduler/backlog.py): the store read against a real Redis, one
replica reporting each partition, series removed when a replica stops reporting, and the gauges on
real schedulers' /metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest
import redis
from prometheus_client import REGISTRY

from schedcore.errors import StoreUnavailable
from schedcore.redisconn import from_url
from schedcore.store import Store
from schedcore.store.keys import Partitions
from schedcore.store.stats import Backlog
from services.scheduler.backlog import BacklogGauges
from services.scheduler.ownership import Ownership
from tests.integration.engine_support import ENGINE_ENV, ROOT, _serving, service_argv
from tests.integration.test_metrics import scrape, value
from tests.support import RedisServer, free_port, wait_for

FAR_MS = 10**13  # a lease expiry no reclaim reaches during a test
# Per partition: (ready, in flight, waiting for a command executor); partition 2 holds nothing.
FILLED = {0: (3, 2, 1), 1: (5, 0, 4), 2: (0, 0, 0), 3: (1, 7, 0)}
NAMES = (
    "tasksched_executions_ready",
    "tasksched_executions_in_flight",
    "tasksched_executions_waiting_command",
)


def fill(rds: redis.Redis, count: int, filled: dict[int, tuple[int, int, int]]) -> None:
    parts = Partitions("ts", count)
    for p, (ready, in_flight, command) in filled.items():
        keys = parts.all[p]
        for key, n, score in (
            (keys.ready, ready, 1),
            (keys.inflight, in_flight, FAR_MS),
            (keys.ready_command, command, 1),
        ):
            if n:
                rds.zadd(key, {f"{p}-{key}-{i}": score for i in range(n)})


def gauge(name: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(name, {"partition": str(partition)})


def test_the_store_reads_each_partition_asked_for(redis_srv: RedisServer, rds: redis.Redis) -> None:
    fill(rds, 4, FILLED)

    async def read() -> dict[int, Backlog]:
        client = from_url(redis_srv.url)
        try:
            return await Store(client, partitions=4).stats.backlog([0, 2, 3])
        finally:
            await client.aclose()

    assert asyncio.run(read()) == {p: Backlog(*FILLED[p]) for p in (0, 2, 3)}


def test_a_partition_no_longer_reported_loses_its_series(redis_srv: RedisServer, rds: redis.Redis) -> None:
    fill(rds, 4, FILLED)
    mine = {0, 1}

    async def scenario() -> None:
        client = from_url(redis_srv.url)
        gauges = BacklogGauges(Store(client, partitions=4).stats, 4, lambda p: p in mine)
        await gauges.observe()
        for p in (0, 1):
            for name, expected in zip(NAMES, FILLED[p], strict=True):
                assert gauge(name, p) == expected, (name, p)
        assert gauge(NAMES[0], 3) is None  # not reported here
        mine.discard(0)  # another replica took partition 0 over
        mine.add(3)
        await gauges.observe()
        assert all(gauge(name, 0) is None for name in NAMES)
        assert gauge(NAMES[1], 3) == 7 and gauge(NAMES[0], 1) == 5
        mine.clear()
        await gauges.observe()
        assert all(gauge(name, p) is None for name in NAMES for p in range(4))
        await client.aclose()

    asyncio.run(scenario())


def test_a_failed_read_is_counted_and_keeps_the_loop_going() -> None:
    class DownStats:
        calls = 0
        enough: asyncio.Event  # set by the test: the loop's stop event

        async def backlog(self, partitions: list[int]) -> dict[int, Backlog]:
            self.calls += 1
            if self.calls == 3:
                self.enough.set()
            raise StoreUnavailable("connection refused")

    before = REGISTRY.get_sample_value("tasksched_redis_errors_total", {"operation": "backlog"}) or 0.0

    async def scenario() -> None:
        down = DownStats()
        gauges = BacklogGauges(down, 1, lambda p: True, interval_s=0.01)  # type: ignore[arg-type]
        down.enough = gauges.stopping  # the third failed round stops the loop
        await asyncio.wait_for(gauges.run(), 10)

    asyncio.run(scenario())
    after = REGISTRY.get_sample_value("tasksched_redis_errors_total", {"operation": "backlog"})
    assert after is not None and after - before == 3


@pytest.mark.parametrize("count", [1, 4])
def test_two_replicas_report_each_partition_once(
    redis_srv: RedisServer, rds: redis.Redis, count: int
) -> None:
    """Both in this process (one registry): which partitions each one's series cover."""

    async def scenario() -> None:
        client = from_url(redis_srv.url)
        store = Store(client, partitions=count)
        replicas = []
        for name in ("r1", "r2"):
            ownership = Ownership(store.ownership, count, name, 0.6)
            replicas.append((ownership, BacklogGauges(store.stats, count, ownership.reports)))
        for _ in range(2):
            for ownership, _gauges in replicas:
                await ownership.beat()
        for _ownership, gauges in replicas:
            await gauges.observe()
        shown = [gauges.shown for _, gauges in replicas]
        assert shown[0].isdisjoint(shown[1]) and shown[0] | shown[1] == set(range(count)), shown
        await client.aclose()

    asyncio.run(scenario())


# --- real schedulers ----------------------------------------------------------------------------


def test_the_gauges_on_two_schedulers_metrics_count_each_partition_once(
    redis_srv: RedisServer, rds: redis.Redis
) -> None:
    """Two scheduler processes over four partitions: each partition's series is on exactly one
    /metrics, with what Redis holds; when that scheduler stops, the other reports it."""
    fill(rds, 4, FILLED)
    rds.set(Partitions("ts", 4).home.partition_count, 4)  # as the first service records it
    ports = [(free_port(), free_port()) for _ in range(2)]
    env = {
        **os.environ,
        **ENGINE_ENV,
        "REDIS_URL": redis_srv.url,
        "GRPC_HOST": "127.0.0.1",
        "PARTITIONS": "4",
        "PARTITION_LEASE_SECONDS": "1.5",
        "EXECUTOR_ADDRS": f"127.0.0.1:{free_port()}",  # none there: nothing is dispatched
    }
    procs = [
        subprocess.Popen(
            service_argv("services.scheduler"),
            cwd=ROOT,
            env={**env, "GRPC_PORT": str(grpc), "METRICS_PORT": str(metrics), "INSTANCE_ID": f"s{i}"},
        )
        for i, (grpc, metrics) in enumerate(ports)
    ]
    try:
        for proc, (grpc, _) in zip(procs, ports, strict=True):
            wait_for(lambda proc=proc, grpc=grpc: _serving(grpc, proc), 20)

        def reported(metrics_ports: list[int]) -> dict[int, list[tuple[float, ...]]]:
            out: dict[int, list[tuple[float, ...]]] = {p: [] for p in FILLED}
            for port in metrics_ports:
                samples = scrape(port)
                for p in FILLED:
                    if (NAMES[0], frozenset({("partition", str(p))})) in samples:
                        out[p].append(tuple(value(samples, n, partition=str(p)) for n in NAMES))
            return out

        def each_once(metrics_ports: list[int]) -> bool:
            return reported(metrics_ports) == {p: [tuple(map(float, f))] for p, f in FILLED.items()}

        both = [metrics for _, metrics in ports]
        wait_for(lambda: each_once(both), 30, interval=0.5)
        # Both report some partitions (four over two, by rendezvous over s0 and s1).
        assert all(any(reported([port]).values()) for port in both)
        procs[0].send_signal(signal.SIGTERM)
        procs[0].wait(20)
        started = time.monotonic()
        wait_for(lambda: each_once(both[1:]), 30, interval=0.5)
        assert time.monotonic() - started < 15
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
