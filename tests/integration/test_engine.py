"""The engine end to end: api, scheduler and executor running against a real Redis."""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from google.protobuf.duration_pb2 import Duration

from schedcore import pb
from services.api.app import build as build_api
from tests.conftest import Backend
from tests.integration.engine_support import Suite, every_second, http, once_in, running
from tests.sink import Sink
from tests.support import ServiceThread, free_port, wait_for

S = pb.ExecutionStatus

# Every test runs on each of tests/conftest.py's BACKENDS: one Redis or a 3-primary cluster, one
# partition or four (with four, a scheduler claims the partitions it works, docs/partitions.md).
pytestmark = pytest.mark.backends()


@dataclass
class BackendSuite(Suite):
    """A Suite whose every process is given the backend's REDIS_URL, REDIS_CLUSTER_NODES and
    PARTITIONS (before a test's own overrides)."""

    backend_env: dict[str, str] = field(default_factory=dict)

    def env(self, port: int, **overrides: str) -> dict[str, str]:
        return super().env(port, **{**self.backend_env, **overrides})


@contextlib.contextmanager
def suite(backend: Backend, schedulers: int = 1, executors: int = 1, **overrides: str) -> Iterator[Suite]:
    """engine_support.suite on `backend`: the api in-process, executors and schedulers as processes;
    `overrides` are more environment variables of the processes."""
    api = ServiceThread(build_api, backend.settings())
    # A cluster's url is its first primary's (the processes read credentials only from it).
    s = BackendSuite(
        backend.server,  # type: ignore[arg-type]
        api,
        free_port(),
        [free_port() for _ in range(executors)],
        backend_env=backend.env(),
    )
    with running(s, schedulers, **overrides) as started:
        yield started


def tolerance(backend: Backend, seconds: str) -> dict[str, str]:
    """MISSED_TOLERANCE_SECONDS, with a partition lease under half of it where there are several
    partitions (the settings check refuses a longer one: docs/partitions.md, Invariant 2)."""
    if backend.partitions == 1:
        return {"MISSED_TOLERANCE_SECONDS": seconds}
    return {"MISSED_TOLERANCE_SECONDS": seconds, "PARTITION_LEASE_SECONDS": f"{float(seconds) * 0.4:g}"}


@pytest.fixture()
def one(backend: Backend, rds) -> Iterator[Suite]:
    with suite(backend) as s:
        yield s


@pytest.fixture()
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def test_one_time_task_runs_on_time_and_completes(one: Suite) -> None:
    task = one.create("once", once_in(1.0), payload=None)
    [execution] = one.wait_terminal(task.id, 1, timeout=5)
    assert execution.status == S.EXECUTION_STATUS_SUCCEEDED
    assert execution.id == f"{task.id}-{task.next_run_time.ToMilliseconds():013d}"
    lag_ms = execution.lag.ToMilliseconds()
    assert 0 <= lag_ms < 1000, lag_ms
    assert execution.start_time.ToMilliseconds() >= task.next_run_time.ToMilliseconds()
    assert execution.finish_time.ToMilliseconds() >= execution.start_time.ToMilliseconds()
    assert execution.executor
    record = json.loads(execution.result.output)
    assert task.id in json.dumps(record)
    done = one.stub.GetTask(pb.GetTaskRequest(id=task.id)).task
    assert done.state == pb.TaskState.TASK_STATE_COMPLETED
    assert not done.HasField("next_run_time")
    assert done.last_execution.execution_id == execution.id
    assert done.last_execution.status == S.EXECUTION_STATUS_SUCCEEDED


def test_cron_every_second_fires_once_per_second_without_gap(one: Suite) -> None:
    task = one.create("tick", every_second())
    time.sleep(5.2)
    one.stub.PauseTask(pb.PauseTaskRequest(id=task.id))
    executions = one.wait_terminal(task.id, 4)
    nominal = sorted(e.nominal_time.ToMilliseconds() for e in executions)
    assert len(nominal) >= 4
    assert len(set(nominal)) == len(nominal)
    assert all(b - a == 1000 for a, b in itertools.pairwise(nominal)), nominal
    assert all(e.status == S.EXECUTION_STATUS_SUCCEEDED for e in executions)


def test_http_target_gets_the_idempotency_key(one: Suite, sink: Sink) -> None:
    task = one.create("hook", once_in(0.3), http(sink.url("/ok")))
    [execution] = one.wait_terminal(task.id, 1)
    assert execution.status == S.EXECUTION_STATUS_SUCCEEDED
    assert execution.result.http.status_code == 200
    assert sink.calls[execution.id] == 1


def test_failing_target_is_retried_with_backoff_then_fails(one: Suite, sink: Sink) -> None:
    policy = pb.RetryPolicy(
        max_attempts=3, initial_backoff=Duration(nanos=200_000_000), backoff_multiplier=2.0
    )
    task = one.create("flaky", once_in(0.2), http(sink.url("/status/503")), retry_policy=policy)
    [execution] = one.wait_terminal(task.id, 1, timeout=10)
    assert execution.status == S.EXECUTION_STATUS_FAILED
    assert execution.attempt == 3
    assert execution.result.http.status_code == 503
    assert sink.calls[execution.id] == 3
    # Backoff 0.2 s then 0.4 s: the last attempt started at least 0.6 s after the nominal time.
    assert execution.start_time.ToMilliseconds() - execution.nominal_time.ToMilliseconds() >= 600


def test_hanging_target_times_out(one: Suite, sink: Sink) -> None:
    task = one.create("hang", once_in(0.2), http(sink.url("/hang")), timeout=Duration(nanos=500_000_000))
    [execution] = one.wait_terminal(task.id, 1, timeout=10)
    assert execution.status == S.EXECUTION_STATUS_TIMED_OUT
    assert 400 <= execution.duration.ToMilliseconds() < 3000


def test_pause_resume_delete_and_run_now(one: Suite) -> None:
    task = one.create("ctl", every_second())
    wait_for(lambda: len(one.executions(task.id)) >= 2, 5)
    one.stub.PauseTask(pb.PauseTaskRequest(id=task.id))
    time.sleep(0.3)
    paused_count = len(one.executions(task.id))
    time.sleep(1.5)
    assert len(one.executions(task.id)) == paused_count, "a paused task fired"
    resumed = one.stub.ResumeTask(pb.ResumeTaskRequest(id=task.id)).task
    wait_for(lambda: len(one.executions(task.id)) > paused_count, 5)
    after = [
        e
        for e in one.executions(task.id)
        if e.nominal_time.ToMilliseconds() >= resumed.next_run_time.ToMilliseconds()
    ]
    assert after, "resume continues from the next occurrence after now"
    one.stub.DeleteTask(pb.DeleteTaskRequest(id=task.id))
    time.sleep(0.3)
    deleted_count = len(one.executions(task.id))
    time.sleep(1.5)
    assert len(one.executions(task.id)) == deleted_count, "a deleted task fired"

    manual = one.create("manual", once_in(3600))
    run = one.stub.RunTask(pb.RunTaskRequest(id=manual.id)).execution
    [done] = one.wait_terminal(manual.id, 1, timeout=5)
    assert done.id == run.id
    assert done.status == S.EXECUTION_STATUS_SUCCEEDED
    assert done.trigger == pb.ExecutionTrigger.EXECUTION_TRIGGER_MANUAL


def test_two_schedulers_two_executors_fire_500_tasks_exactly_once(
    backend: Backend,
    rds,
    sink: Sink,
) -> None:
    # 500 HTTP calls at one instant on a shared 2-core machine: a 2 s lease can expire before
    # the first renewal reaches Redis, and an expired lease runs the target again (at least once,
    # docs/engine.md "Known limits"). 5 s, like the fault suite; production's default is 10 s.
    with suite(backend, schedulers=2, executors=2, LEASE_SECONDS="5") as s:
        due = once_in(3.0)
        target = http(sink.url("/ok"))
        requests = [
            pb.CreateTaskRequest(task=pb.Task(name=f"t{i}", schedule=due, target=target)) for i in range(500)
        ]
        tasks = s.stub.BatchCreateTasks(pb.BatchCreateTasksRequest(requests=requests)).tasks
        ids = {t.id for t in tasks}

        def all_done() -> bool:
            found = s.executions()
            return len(found) >= 500 and all(e.status == S.EXECUTION_STATUS_SUCCEEDED for e in found)

        wait_for(all_done, 30)
        executions = s.executions()
        assert len(executions) == 500
        assert {e.task_id for e in executions} == ids
        assert Counter(sink.calls[e.id] for e in executions) == Counter({1: 500})
        assert len({e.executor for e in executions}) == 2, "work spread over both executors"


def test_killed_scheduler_work_is_finished_once_by_another(
    backend: Backend,
    rds,
    sink: Sink,
) -> None:
    """kill -9 the only scheduler while the occurrences it leased run on the executor; a new
    scheduler on the same address takes over: every occurrence ends, once."""
    with suite(backend, schedulers=0, executors=1) as s:
        proc = s.start_scheduler()
        due = once_in(1.5)
        tasks = [s.create(f"slow{i}", due, http(sink.url("/slow/1500"))) for i in range(20)]
        wait_for(lambda: sum(sink.calls.values()) >= 20, 10)  # all dispatched and running
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        s.start_scheduler()
        wait_for(
            lambda: (
                len(s.executions()) == 20
                and all(e.status == S.EXECUTION_STATUS_SUCCEEDED for e in s.executions())
            ),
            20,
        )
        executions = s.executions()
        assert {e.task_id for e in executions} == {t.id for t in tasks}
        assert all(sink.calls[e.id] == 1 for e in executions), dict(sink.calls)


def test_missed_window_runs_once_and_records_skipped(backend: Backend, rds) -> None:
    with suite(backend, **tolerance(backend, "1")) as s:
        task = s.create("tick", every_second())
        wait_for(lambda: len(s.executions(task.id)) >= 1, 5)
        scheduler = s.processes[-1]
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(10) == 0
        time.sleep(4.5)
        stopped_at = max(e.nominal_time.ToMilliseconds() for e in s.executions(task.id))
        s.start_scheduler(free_port(), **tolerance(backend, "1"))
        wait_for(lambda: any(e.status == S.EXECUTION_STATUS_SKIPPED for e in s.executions(task.id)), 5)
        time.sleep(1.5)
        executions = sorted(s.executions(task.id), key=lambda e: e.nominal_time.ToMilliseconds())
        nominal = [e.nominal_time.ToMilliseconds() for e in executions]
        assert len(set(nominal)) == len(nominal)
        assert all(b - a == 1000 for a, b in itertools.pairwise(nominal)), "no silent gap"
        window = [e for e in executions if e.nominal_time.ToMilliseconds() > stopped_at]
        skipped = [e for e in window if e.status == S.EXECUTION_STATUS_SKIPPED]
        ran = [e for e in window if e.status != S.EXECUTION_STATUS_SKIPPED]
        assert len(skipped) >= 2
        assert "missed" in skipped[0].status_message
        first_missed = window[0]
        assert first_missed.status != S.EXECUTION_STATUS_SKIPPED, "the window runs once, first"
        assert ran[0].id == first_missed.id


def test_a_busy_executor_is_sent_nothing_and_holds_up_no_one(backend: Backend, rds, sink: Sink) -> None:
    """Backpressure: an executor with no free slot gets no work (credits), so work due while it is
    busy runs at once on the other executor instead of queueing behind it."""
    with suite(backend, schedulers=0, executors=0) as s:
        slow_port, fast_port = s.executor_ports = [free_port(), free_port()]
        s.start_executor(slow_port, EXECUTOR_CONCURRENCY="1", INSTANCE_ID="slow")
        s.start_scheduler()  # knows both addresses; only the slow executor is up
        blocker = s.create("blocker", once_in(1.0), http(sink.url("/slow/12000")))
        wait_for(lambda: sink.calls[f"{blocker.id}-{blocker.next_run_time.ToMilliseconds():013d}"] == 1, 5)
        s.start_executor(fast_port, EXECUTOR_CONCURRENCY="50", INSTANCE_ID="fast")
        time.sleep(2.2)  # the scheduler reconnects to the new executor (backoff at most 2 s)
        due = once_in(1.0)
        target = http(sink.url("/ok"))
        requests = [
            pb.CreateTaskRequest(task=pb.Task(name=f"q{i}", schedule=due, target=target)) for i in range(20)
        ]
        quick = s.stub.BatchCreateTasks(pb.BatchCreateTasksRequest(requests=requests)).tasks

        def quick_done() -> bool:
            found = [e for t in quick for e in s.executions(t.id)]
            return len(found) == 20 and all(e.status == S.EXECUTION_STATUS_SUCCEEDED for e in found)

        wait_for(quick_done, 4)  # long before the blocker ends
        ran = [e for t in quick for e in s.executions(t.id)]
        [blocked] = s.executions(blocker.id)
        assert blocked.status == S.EXECUTION_STATUS_RUNNING, "the blocker is still running"
        assert {e.executor for e in ran} == {"fast"}, "the busy executor was sent work"
        # Queued behind the blocker they would wait ~10 s; a loaded machine may add a second or two.
        assert max(e.lag.ToMilliseconds() for e in ran) < 5000


def test_scheduler_keeps_each_tasks_history_within_the_limit(backend: Backend, rds) -> None:
    with suite(backend, HISTORY_MAX_PER_TASK="3") as s:
        task = s.create("tick", every_second())
        other = s.create("tock", every_second())

        def ran(n: int) -> bool:
            stats = s.stub.GetStats(pb.GetStatsRequest())
            return sum(c.count for c in stats.executions) >= n

        wait_for(lambda: ran(12), 20)
        for t in (task, other):
            s.stub.PauseTask(pb.PauseTaskRequest(id=t.id))
        time.sleep(1.5)  # the last runs end (and trim)
        for t in (task, other):
            kept = s.executions(t.id)
            assert len(kept) == 3, [e.id for e in kept]
            assert all(e.status == S.EXECUTION_STATUS_SUCCEEDED for e in kept)
            newest = max(e.nominal_time.ToMilliseconds() for e in kept)
            assert (
                s.stub.GetTask(pb.GetTaskRequest(id=t.id)).task.last_execution.nominal_time.ToMilliseconds()
                == newest
            )
