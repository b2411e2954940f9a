"""GetStats: tasks by state, executions that ended by status and over time, lag percentiles."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import grpc
import pytest

from schedcore import pb
from tests.integration.engine_support import Suite, http, once_in, suite
from tests.integration.helpers import create, cron_task, duration, invalid, once_task
from tests.support import RedisServer, free_port, wait_for

S = pb.ExecutionStatus
T = pb.TaskState


def tasks_by_state(stats: pb.GetStatsResponse) -> dict[int, int]:
    return {c.state: c.count for c in stats.tasks}


def statuses(counts) -> dict[int, int]:
    return {c.status: c.count for c in counts}


def test_task_counts_follow_create_pause_resume_delete(stub) -> None:
    empty = stub.GetStats(pb.GetStatsRequest())
    assert tasks_by_state(empty) == {
        T.TASK_STATE_ACTIVE: 0,
        T.TASK_STATE_PAUSED: 0,
        T.TASK_STATE_COMPLETED: 0,
    }
    a = create(stub, cron_task("a"))
    b = create(stub, cron_task("b"))
    create(stub, once_task("c"))
    assert tasks_by_state(stub.GetStats(pb.GetStatsRequest()))[T.TASK_STATE_ACTIVE] == 3
    stub.PauseTask(pb.PauseTaskRequest(id=a.id))
    stub.PauseTask(pb.PauseTaskRequest(id=a.id))  # pausing a paused task changes nothing
    assert tasks_by_state(stub.GetStats(pb.GetStatsRequest())) == {
        T.TASK_STATE_ACTIVE: 2,
        T.TASK_STATE_PAUSED: 1,
        T.TASK_STATE_COMPLETED: 0,
    }
    stub.DeleteTask(pb.DeleteTaskRequest(id=a.id))
    stub.ResumeTask(pb.ResumeTaskRequest(id=b.id))  # already active: a no-op
    stub.DeleteTask(pb.DeleteTaskRequest(id=b.id))
    assert tasks_by_state(stub.GetStats(pb.GetStatsRequest()))[T.TASK_STATE_ACTIVE] == 1
    assert tasks_by_state(stub.GetStats(pb.GetStatsRequest()))[T.TASK_STATE_PAUSED] == 0


def test_window_and_bucket_shape(stub) -> None:
    day = stub.GetStats(pb.GetStatsRequest(window=duration(86400), bucket_width=duration(3600)))
    assert len(day.buckets) == 24
    assert day.end_time.ToMilliseconds() - day.start_time.ToMilliseconds() == 86_400_000
    assert day.end_time.ToMilliseconds() % 60_000 == 0
    assert day.end_time.ToMilliseconds() > time.time() * 1000 - 5000
    starts = [b.start_time.ToMilliseconds() for b in day.buckets]
    assert starts[0] == day.start_time.ToMilliseconds()
    assert all(b - a == 3_600_000 for a, b in itertools.pairwise(starts))
    hour = stub.GetStats(pb.GetStatsRequest())
    assert len(hour.buckets) == 60, "default: one hour in minutes"
    uneven = stub.GetStats(pb.GetStatsRequest(window=duration(600), bucket_width=duration(240)))
    assert len(uneven.buckets) == 3, "the last bucket is shorter"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"window": duration(90)}, "window"),
        ({"window": duration(30)}, "window"),
        ({"window": duration(86400 + 60)}, "window"),
        ({"bucket_width": duration(0.5)}, "bucket_width"),
        ({"window": duration(600), "bucket_width": duration(1200)}, "bucket_width"),
    ],
)
def test_bad_windows_are_invalid(stub, request_fields, field) -> None:
    invalid(lambda: stub.GetStats(pb.GetStatsRequest(**request_fields)), field)


@pytest.fixture()
def one(redis_srv: RedisServer, rds) -> Iterator[Suite]:
    with suite(redis_srv) as s:
        yield s


def test_ended_executions_are_counted_once_with_their_lag(one: Suite) -> None:
    refused = f"http://127.0.0.1:{free_port()}/"  # nothing listens: every attempt fails
    ok = [one.create(f"ok{i}", once_in(0.5)) for i in range(3)]
    retried = one.create(
        "retried",
        once_in(0.5),
        http(refused),
        retry_policy=pb.RetryPolicy(max_attempts=2, initial_backoff=duration(0.1)),
    )
    for task in ok:
        one.wait_terminal(task.id, 1)
    [failed] = one.wait_terminal(retried.id, 1)
    assert failed.status == S.EXECUTION_STATUS_FAILED and failed.attempt == 2

    def counted() -> pb.GetStatsResponse | None:
        stats = one.stub.GetStats(pb.GetStatsRequest(window=duration(300)))
        return stats if sum(c.count for c in stats.executions) >= 4 else None

    wait_for(counted, 5)
    stats = one.stub.GetStats(pb.GetStatsRequest(window=duration(300)))
    # Two attempts of the retried task: counted once, as the final FAILED.
    assert statuses(stats.executions) == {S.EXECUTION_STATUS_SUCCEEDED: 3, S.EXECUTION_STATUS_FAILED: 1}
    per_bucket: dict[int, int] = {}
    for bucket in stats.buckets:
        for status, count in statuses(bucket.counts).items():
            per_bucket[status] = per_bucket.get(status, 0) + count
    assert per_bucket == statuses(stats.executions), "the series adds up to the totals"
    assert stats.lag.count == 4
    p50, p99 = stats.lag.p50.ToMilliseconds(), stats.lag.p99.ToMilliseconds()
    assert 0 <= p50 <= p99
    # The slowest recorded lag (the retry ran after its backoff) bounds p99 from above within
    # a histogram bucket: the estimate is never more than 2.5x it, plus the first bucket.
    worst = max(e.lag.ToMilliseconds() for t in [*ok, retried] for e in one.executions(t.id))
    assert p99 <= max(5, worst * 2.5)
    assert tasks_by_state(stats)[T.TASK_STATE_COMPLETED] == 4, "one-time tasks complete when fired"
    assert tasks_by_state(stats)[T.TASK_STATE_ACTIVE] == 0


def test_queue_depths(stub) -> None:
    # No scheduler runs here: a manual run stays pending in the ready queue.
    task = create(stub, cron_task("queued"))
    stub.RunTask(pb.RunTaskRequest(id=task.id))
    stats = stub.GetStats(pb.GetStatsRequest())
    assert stats.pending_executions == 1 and stats.running_executions == 0
    assert not stats.executions, "nothing ended yet"
    err = None
    try:
        stub.GetStats(pb.GetStatsRequest(window=duration(-60)))
    except grpc.RpcError as e:
        err = e
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
