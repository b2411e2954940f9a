"""Load shedding and the per-token rate limit: past API_MAX_CONCURRENT_RPCS a replica answers
RESOURCE_EXHAUSTED at once (instead of queueing calls until they end CANCELLED) while its health
service keeps answering SERVING; a token past API_RATE_LIMIT gets RESOURCE_EXHAUSTED at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schedcore import pb
from tests.integration.auth_support import EDITOR, AuthApi, start_auth_api
from tests.integration.helpers import cron_task, rpc_error, stop_service
from tests.integration.test_api_process import SERVING, api_process
from tests.support import RedisServer

BOUND = 4
SEEDED = 5000  # tasks every slow ListTasks call examines (its scan budget)


def seed(channel: grpc.Channel) -> None:
    stub = pb.task_service_grpc.TaskServiceStub(channel)
    for chunk in range(SEEDED // 1000):
        requests = [pb.CreateTaskRequest(task=cron_task(f"seed-{chunk}-{i:04d}")) for i in range(1000)]
        stub.BatchCreateTasks(pb.BatchCreateTasksRequest(requests=requests), timeout=30)


def test_past_the_bound_calls_are_refused_at_once_and_health_stays_serving(
    tmp_path: Path, redis_srv: RedisServer, rds: redis.Redis
) -> None:
    with (
        api_process(
            tmp_path, redis_srv.url, API_MAX_CONCURRENT_RPCS=str(BOUND), HEALTH_INTERVAL_SECONDS="0.2"
        ) as api,
        api.channel() as channel,
        api.channel() as probe_channel,
    ):
        seed(channel)
        stub = pb.task_service_grpc.TaskServiceStub(channel)
        # Matches nothing: each call walks the whole name index (SCAN_BUDGET entries).
        slow = pb.ListTasksRequest(name_contains="no such task", page_size=10)
        health = health_pb2_grpc.HealthStub(probe_channel)
        statuses: list[object] = []  # each answer, or the code of a failed check
        loaded = threading.Event()

        def probe() -> None:
            while not loaded.is_set():
                try:
                    statuses.append(health.Check(health_pb2.HealthCheckRequest(), timeout=2).status)
                except grpc.RpcError as err:
                    statuses.append(err.code())
                time.sleep(0.02)

        prober = threading.Thread(target=probe)
        prober.start()
        outcomes: list[tuple[grpc.StatusCode, float, str]] = []
        lock = threading.Lock()
        done = threading.Semaphore(0)
        calls = 120
        started = time.monotonic()

        def finished(future: grpc.Future) -> None:
            error = future.exception()
            code = grpc.StatusCode.OK if error is None else error.code()  # type: ignore[attr-defined]
            details = "" if error is None else error.details()  # type: ignore[attr-defined]
            with lock:
                outcomes.append((code, time.monotonic() - started, details or ""))
            done.release()

        try:
            for _ in range(calls):
                stub.ListTasks.future(slow, timeout=60).add_done_callback(finished)
            for _ in range(calls):
                assert done.acquire(timeout=90)
        finally:
            loaded.set()
            prober.join(10)
        codes = {code for code, _, _ in outcomes}
        assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        refused = [
            (at, details) for code, at, details in outcomes if code == grpc.StatusCode.RESOURCE_EXHAUSTED
        ]
        assert refused, "some calls past the bound are refused"
        assert any(code == grpc.StatusCode.OK for code, _, _ in outcomes), "the calls within it are served"
        assert min(at for at, _ in refused) < 2.0, "refused at once, not after queueing"
        assert "API_MAX_CONCURRENT_RPCS" in refused[0][1] and str(BOUND) in refused[0][1]
        assert statuses and set(statuses) == {SERVING}, "health answered SERVING throughout the load"
        # The load is gone: calls are served again.
        stub.ListTasks(pb.ListTasksRequest(page_size=1), timeout=10)


@pytest.fixture()
def limited_api(redis_srv: RedisServer, rds: redis.Redis) -> Iterator[AuthApi]:
    # Slow refill: the test's calls after the burst must all fall within the 2 s one request takes
    # to come back, even on a busy machine.
    service = start_auth_api(redis_srv, api_rate_limit=0.5, api_rate_burst=5)
    with grpc.insecure_channel(service.target) as channel:
        yield AuthApi(service, channel)
    stop_service(service)


def test_a_token_past_its_rate_is_refused_at_once_and_other_tokens_are_not(limited_api: AuthApi) -> None:
    admin = limited_api.admin
    _, secret = admin.new_token("busy", EDITOR)
    busy = limited_api.caller(secret)
    for _ in range(5):
        busy.auth.WhoAmI(pb.WhoAmIRequest())
    started = time.monotonic()
    err = rpc_error(lambda: busy.auth.WhoAmI(pb.WhoAmIRequest()), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert time.monotonic() - started < 1.0, "refused at once"
    message = err.details() or ""
    assert "rate limit" in message and "'busy'" in message and "API_RATE_LIMIT" in message, message
    # Nothing the refused token asks is done, and another token has its own bucket.
    rpc_error(
        lambda: busy.tasks.CreateTask(pb.CreateTaskRequest(task=cron_task("x"))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert admin.tasks.ListTasks(pb.ListTasksRequest()).tasks == []
    # The bucket refills at one request per 2 s.
    time.sleep(2.1)
    assert busy.auth.WhoAmI(pb.WhoAmIRequest()).token.name == "busy"
