"""Prometheus metrics read from the /metrics endpoints of running services (METRICS_PORT).

The scheduler and the executor run as processes of their own, so their counters start at zero;
the api runs in the test process, whose registry earlier tests also moved: its figures are
compared before and after.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from urllib.request import urlopen

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.parser import text_string_to_metric_families

from schedcore import metrics, pb
from schedcore.settings import Settings
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.engine_support import ROOT, TERMINAL, Suite, http, once_in
from tests.sink import Sink
from tests.support import RedisServer, ServiceThread, free_port, redis_server, wait_for

S = pb.ExecutionStatus
TASK_SERVICE = "/scheduler.v1.TaskService"

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class MeteredSuite(Suite):
    """A Suite whose api, scheduler and executor each serve /metrics on a port of their own."""

    def __init__(self, redis: RedisServer) -> None:
        self.api_metrics, self.scheduler_metrics, self.executor_metrics = (free_port() for _ in range(3))
        api = ServiceThread(build_api, api_settings(redis.url, metrics_port=self.api_metrics))
        super().__init__(redis, api, free_port(), [free_port()])

    def start_executor(self, port: int | None = None, **overrides: str) -> subprocess.Popen[bytes]:
        overrides.setdefault("METRICS_PORT", str(self.executor_metrics))
        return super().start_executor(port or self.executor_ports[0], **overrides)

    def start_scheduler(self, port: int | None = None, **overrides: str) -> subprocess.Popen[bytes]:
        overrides.setdefault("METRICS_PORT", str(self.scheduler_metrics))
        return super().start_scheduler(port, **overrides)


@contextlib.contextmanager
def metered(redis: RedisServer) -> Iterator[MeteredSuite]:
    s = MeteredSuite(redis)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture()
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def _ts(seconds_from_now: float) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(int((time.time() + seconds_from_now) * 1000))
    return ts


def test_engine_counters_match_what_ran(redis_srv: RedisServer, rds, sink: Sink) -> None:
    with metered(redis_srv) as s:
        before = scrape(s.api_metrics)
        # Occurrences while no scheduler runs: found late, the window runs once, the rest SKIPPED.
        window = pb.Schedule(
            cron=pb.CronSchedule(expression="* * * * * *", start_time=_ts(0), end_time=_ts(3.5))
        )
        missed = s.create("missed", window)
        time.sleep(5.0)
        s.start_executor()
        # late beyond 0.5 s: missed; standby credits, so runs due later are leased as they fire
        s.start_scheduler(MISSED_TOLERANCE_SECONDS="0.5", STANDBY_CREDITS="16")
        ones = [s.create(f"once{i}", once_in(1.0)) for i in range(4)]
        flaky = s.create(
            "flaky",
            once_in(1.0),
            http(sink.url("/status/503")),
            retry_policy=pb.RetryPolicy(max_attempts=2, initial_backoff=Duration(nanos=50_000_000)),
        )
        hang = s.create("hang", once_in(1.0), http(sink.url("/hang")), timeout=Duration(nanos=300_000_000))
        with pytest.raises(grpc.RpcError) as err:
            s.stub.GetTask(pb.GetTaskRequest(id="0123456789abcdef"))
        assert err.value.code() is grpc.StatusCode.NOT_FOUND

        tasks = [missed, *ones, flaky, hang]

        def ended(task: pb.Task) -> bool:
            found = s.executions(task.id)
            return bool(found) and all(e.status in TERMINAL for e in found)

        wait_for(lambda: all(ended(t) for t in tasks), 30)
        executions = s.executions()
        final = Counter(metrics.status_label(S.Name(e.status)) for e in executions)
        skipped = final.pop("skipped")
        assert skipped >= 2
        assert final == {"succeeded": 5, "failed": 1, "timed_out": 1}
        assert {e.task_id for e in executions} == {t.id for t in tasks}

        # Counters move right after the records are written: wait for them, then check exactly.
        def scheduler_done() -> bool:
            return sum(
                value(scrape(s.scheduler_metrics), "tasksched_executions_finished_total", status=k)
                for k in final
            ) >= sum(final.values())

        wait_for(scheduler_done, 10)
        sched = scrape(s.scheduler_metrics)
        assert value(sched, "tasksched_occurrences_fired_total") == 7  # one per task
        assert value(sched, "tasksched_occurrences_skipped_total") == skipped
        for status, count in final.items():
            assert value(sched, "tasksched_executions_finished_total", status=status) == count, status
        assert value(sched, "tasksched_execution_retries_total") == 1
        attempts = 8  # seven executions, one of them twice
        leases = {path: value(sched, "tasksched_leases_taken_total", path=path) for path in ("fire", "ready")}
        assert sum(leases.values()) == attempts, leases
        # The retry (after its backoff) and the missed window's run, found as the scheduler
        # started, take the ready path; runs due while credits wait on the stream go out leased
        # as they fire (docs/engine.md, "Leased as it fires").
        assert leases["ready"] >= 2 and leases["fire"] >= 1, leases
        assert value(sched, "tasksched_dispatch_batch_executions_sum") == attempts
        assert value(sched, "tasksched_dispatch_batch_executions_count") >= 1
        # One lag per execution's first attempt; the missed window's run was ~4 s late.
        assert value(sched, "tasksched_execution_lag_seconds_count") == 7
        assert value(sched, "tasksched_execution_lag_seconds_bucket", le="1.0") <= 6
        assert value(sched, "tasksched_execution_lag_seconds_bucket", le="+Inf") == 7
        assert value(sched, "tasksched_leases_reclaimed_total", outcome="requeued") == 0

        execu = scrape(s.executor_metrics)
        assert value(execu, "tasksched_executor_attempts_total", target="log", status="succeeded") == 5
        assert value(execu, "tasksched_executor_attempts_total", target="http", status="failed") == 2
        assert value(execu, "tasksched_executor_attempts_total", target="http", status="timed_out") == 1
        assert value(execu, "tasksched_executor_attempts_in_flight") == 0
        configured = Settings.from_env({"GRPC_PLAINTEXT": "true"}).executor_concurrency
        assert value(execu, "tasksched_executor_concurrency") == configured

        after = scrape(s.api_metrics)
        for method, code, moved in (("CreateTask", "OK", 7), ("GetTask", "NOT_FOUND", 1)):
            name, labels = "tasksched_rpc_handled_total", {"method": f"{TASK_SERVICE}/{method}", "code": code}
            assert value(after, name, **labels) - value(before, name, **labels) == moved, method
        duration = ("tasksched_rpc_duration_seconds_count", {"method": f"{TASK_SERVICE}/CreateTask"})
        assert value(after, duration[0], **duration[1]) - value(before, duration[0], **duration[1]) == 7

        # Every service says which version it runs: pyproject.toml's, from the installed metadata.
        build = {"version": PROJECT["version"], "python": platform.python_version()}
        for samples in (sched, execu, after):
            assert value(samples, "tasksched_build_info", **build) == 1


def test_expired_leases_are_counted_reclaimed(redis_srv: RedisServer, rds, sink: Sink) -> None:
    with metered(redis_srv) as s:
        executor = s.start_executor()
        s.start_scheduler(STANDBY_CREDITS="16")
        task = s.create("slow", once_in(0.5), http(sink.url("/slow/2000")))
        wait_for(lambda: sum(sink.calls.values()) >= 1, 10)  # running on the executor
        assert value(scrape(s.executor_metrics), "tasksched_executor_attempts_in_flight") == 1
        executor.send_signal(signal.SIGKILL)
        executor.wait(5)
        s.start_executor()
        [execution] = s.wait_terminal(task.id, 1, timeout=20)
        assert execution.status == S.EXECUTION_STATUS_SUCCEEDED
        sched = scrape(s.scheduler_metrics)
        assert value(sched, "tasksched_leases_reclaimed_total", outcome="requeued") == 1
        # leased as it fired (credits were waiting), then again from ready after the reclaim
        assert value(sched, "tasksched_leases_taken_total", path="fire") == 1
        assert value(sched, "tasksched_leases_taken_total", path="ready") == 1
        assert value(sched, "tasksched_executions_finished_total", status="succeeded") == 1


def test_redis_outage_is_counted() -> None:
    with redis_server() as own, metered(own) as s:
        s.start_scheduler()
        sched_before = scrape(s.scheduler_metrics)
        api_before = scrape(s.api_metrics)
        own.stop()
        with pytest.raises(grpc.RpcError) as err:
            s.stub.GetTask(pb.GetTaskRequest(id="0123456789abcdef"), timeout=10)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE

        def moved(port: int, before: Samples, operation: str) -> bool:
            name = "tasksched_redis_errors_total"
            return value(scrape(port), name, operation=operation) > value(before, name, operation=operation)

        for operation in ("firing", "dispatch", "health"):
            wait_for(lambda op=operation: moved(s.scheduler_metrics, sched_before, op), 20)
        assert moved(s.api_metrics, api_before, "rpc")
        labels = {"method": f"{TASK_SERVICE}/GetTask", "code": "UNAVAILABLE"}
        after = scrape(s.api_metrics)
        assert (
            value(after, "tasksched_rpc_handled_total", **labels)
            == value(api_before, "tasksched_rpc_handled_total", **labels) + 1
        )


def test_no_metrics_server_unless_metrics_port_is_set(api: ServiceThread) -> None:
    assert api.service.metrics is None


def test_a_metrics_port_in_use_stops_the_service_with_a_message(redis_srv: RedisServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "REDIS_URL": redis_srv.url,
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(free_port()),
            "METRICS_PORT": str(port),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "services.scheduler"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert "METRICS_PORT" in proc.stderr


def test_tasks_that_export_metrics_get_series_of_their_own_up_to_the_limit(
    redis_srv: RedisServer, rds, sink: Sink
) -> None:
    """export_metrics (docs/metrics.md, "Per-task metrics"): the lag and outcomes of the first
    TASK_METRICS_MAX such tasks, labelled by id and named by tasksched_task_info; a task without
    it has no series; a task past the limit is counted as dropped."""
    with metered(redis_srv) as s:
        s.start_executor()
        s.start_scheduler(TASK_METRICS_MAX="1")
        every = pb.Schedule(interval=pb.IntervalSchedule())
        every.interval.every.FromMilliseconds(1_000)
        watched = s.create("watched", every, http(sink.url("/status/500")), export_metrics=True)
        wait_for(lambda: len(s.executions(watched.id)) >= 2, 20)  # admitted first: it alone ran
        plain = s.create("plain", every, http(sink.url("/ok")))
        late = s.create("over-the-limit", every, http(sink.url("/ok")), export_metrics=True)
        assert late.export_metrics and not plain.export_metrics

        def dropped() -> float:
            return value(scrape(s.scheduler_metrics), "tasksched_task_metrics_dropped_total")

        wait_for(lambda: dropped() >= 2, 20)
        samples = scrape(s.scheduler_metrics)
        info = {"task": watched.id, "name": "watched", "namespace": "default"}
        assert samples.get(("tasksched_task_info", frozenset(info.items()))) == 1
        failed = value(samples, "tasksched_task_executions_finished_total", task=watched.id, status="failed")
        assert failed >= 2
        assert value(samples, "tasksched_task_execution_lag_seconds_count", task=watched.id) >= failed
        tasks = {dict(labels).get("task") for name, labels in samples if name.startswith("tasksched_task_")}
        assert tasks == {None, watched.id}  # the dropped counter has no label; no other task's series


def test_each_process_exports_only_its_own_families(redis_srv: RedisServer, rds) -> None:
    """A scrape of the executor carries no scheduler family at 0 (and so on): a sum over a family
    counts only the processes that can move it (docs/metrics.md)."""
    with metered(redis_srv) as s:
        s.start_executor()
        s.start_scheduler()

        def families(port: int) -> set[str]:
            with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return {f.name for f in text_string_to_metric_families(response.read().decode())}

        api, scheduler, executor = (
            families(p) for p in (s.api_metrics, s.scheduler_metrics, s.executor_metrics)
        )
        for found in (api, scheduler, executor):
            assert {"tasksched_build_info", "tasksched_rpc_handled", "process_cpu_seconds"} <= found
        assert {
            "tasksched_occurrences_fired",
            "tasksched_executions_ready",
            "tasksched_redis_errors",
        } <= scheduler
        assert "tasksched_executor_attempts" in executor
        assert "tasksched_redis_errors" in api
        assert not {
            f
            for f in executor
            if f.startswith(("tasksched_occurrences", "tasksched_redis", "tasksched_task"))
        }
        assert not {f for f in scheduler if f.startswith("tasksched_executor_")}
        assert not {
            f
            for f in api
            if f.startswith(("tasksched_executor_", "tasksched_occurrences", "tasksched_notif"))
        }
