"""GetStats over several partitions (docs/partitions.md, "Counts, stats, quota usage"): each
partition keeps its own task counts, queues and minute stats, and GetStats sums them. The
counters are written straight into each partition's keys, as the partition's scripts keep them."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import redis

from schedcore import pb
from schedcore.store.keys import Partitions
from schedcore.store.stats import lag_bucket, minute_of
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import duration
from tests.support import RedisServer, ServiceThread

P = 3
PARTS = Partitions(count=P)
S = pb.ExecutionStatus
T = pb.TaskState


@pytest.fixture()
def stub(redis_srv: RedisServer, rds: redis.Redis) -> Iterator[pb.task_service_grpc.TaskServiceStub]:
    service = ServiceThread(build_api, api_settings(redis_srv.url, partitions=P))
    try:
        with grpc.insecure_channel(service.target) as channel:
            yield pb.task_service_grpc.TaskServiceStub(channel)
    finally:
        service.stop()


def redis_minute(rds: redis.Redis) -> int:
    seconds, micros = rds.time()  # type: ignore[misc]
    return minute_of(int(seconds) * 1000 + int(micros) // 1000)


def test_counters_of_every_partition_are_summed(stub, rds: redis.Redis) -> None:
    now = redis_minute(rds)
    # Partition p holds p + 1 active tasks, a paused one in partitions 1 and 2, a completed one
    # in partition 2; a counter that drifted below zero counts as none.
    for p, keys in enumerate(PARTS.all):
        counts = {str(T.TASK_STATE_ACTIVE): p + 1, str(T.TASK_STATE_PAUSED): min(p, 1)}
        if p == 2:
            counts[str(T.TASK_STATE_COMPLETED)] = 1
        if p == 0:
            counts[str(T.TASK_STATE_COMPLETED)] = -1
        rds.hset(keys.task_counts, mapping=counts)  # type: ignore[arg-type]
        rds.zadd(keys.ready, {f"{p}-r{i}": i for i in range(p + 1)})  # 1 + 2 + 3 = 6
        if p:
            rds.zadd(keys.inflight, {f"{p}-f{i}": i for i in range(2 * p)})  # 0 + 2 + 4 = 6
        if p != 1:
            rds.zadd(keys.ready_command, {f"{p}-c": 0})  # 2 more waiting
        # Two minutes of outcomes per partition: a minute ago and five minutes ago.
        rds.hset(
            keys.minute_stats(now - 1),
            mapping={
                f"s{S.EXECUTION_STATUS_SUCCEEDED}": p + 1,
                f"l{lag_bucket(3)}": p + 1,
            },
        )
        rds.hset(
            keys.minute_stats(now - 5),
            mapping={f"s{S.EXECUTION_STATUS_FAILED}": 1, f"l{lag_bucket(40_000)}": 1},
        )
    # Outside the window asked for below: not counted.
    rds.hset(PARTS.all[1].minute_stats(now - 30), mapping={f"s{S.EXECUTION_STATUS_FAILED}": 50})

    stats = stub.GetStats(pb.GetStatsRequest(window=duration(600), bucket_width=duration(60)))
    assert {c.state: c.count for c in stats.tasks} == {
        T.TASK_STATE_ACTIVE: 6,
        T.TASK_STATE_PAUSED: 2,
        T.TASK_STATE_COMPLETED: 1,
    }
    assert stats.pending_executions == 6 + 2
    assert stats.running_executions == 6
    assert {c.status: c.count for c in stats.executions} == {
        S.EXECUTION_STATUS_SUCCEEDED: 6,
        S.EXECUTION_STATUS_FAILED: 3,
    }
    assert stats.lag.count == 9
    # Six of nine lags are under 5 ms, three past 30 s: the median is in the first bucket.
    assert stats.lag.p50.ToMilliseconds() <= 5 and stats.lag.p99.ToMilliseconds() >= 30_000
    by_minute = {
        b.start_time.ToMilliseconds() // 60_000: {c.status: c.count for c in b.counts} for b in stats.buckets
    }
    assert by_minute[now - 1] == {S.EXECUTION_STATUS_SUCCEEDED: 6}
    assert by_minute[now - 5] == {S.EXECUTION_STATUS_FAILED: 3}
    assert sum(1 for counts in by_minute.values() if counts) == 2

    day = stub.GetStats(pb.GetStatsRequest(window=duration(3600)))
    assert {c.status: c.count for c in day.executions}[S.EXECUTION_STATUS_FAILED] == 53
