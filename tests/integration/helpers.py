"""Helpers shared by the api integration tests: building tasks, asserting gRPC errors, snapshots
of Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

import grpc
import pytest
import redis
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from schedcore import pb
from schedcore.store.keys import Keys
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.support import RedisServer, ServiceThread

KEYS = Keys("ts")
TIMEOUT = 10.0  # deadline of every call the tests make


def stop_service(service: ServiceThread, bound: float = 5.0) -> bool:
    """Stop a service started with ServiceThread, waiting at most `bound` seconds for
    GrpcService.stop. Returns whether it stopped within the bound.

    ServiceThread.stop waits 30 s, then gives up silently. GrpcService.stop used to hang for good
    when its health loop lost the one cancellation stop() sends (test_api_shutdown.py guards the
    fix); should it hang again, that costs `bound` seconds and a warning here, and the loop is
    cancelled again until it ends, so the server still stops."""
    future = asyncio.run_coroutine_threadsafe(service.service.stop(1.0), service.loop)
    in_time = True
    try:
        future.result(bound)
    except TimeoutError:
        in_time = False
        warnings.warn("GrpcService.stop() hung: the health loop ignored its cancellation", stacklevel=2)
        health = service.service._health_task
        for _ in range(50):  # each cancellation may be lost the same way: repeat until it lands
            if health is None or future.done():
                break
            service.loop.call_soon_threadsafe(health.cancel)
            with contextlib.suppress(TimeoutError):
                future.result(0.1)
    service.loop.call_soon_threadsafe(service.loop.stop)
    service.thread.join(10)
    return in_time


@pytest.fixture(scope="module")
def api(redis_srv: RedisServer) -> Iterator[ServiceThread]:
    """The api, started once per test module (tests/conftest.py starts one per test).

    It holds no state of its own besides the Redis connection pool and the page-token secret it
    read at start-up, so tests that flush Redis in between (through `stub`, which takes `rds`) are
    as independent as with a fresh api. Fewer start/stop cycles keep the suite fast."""
    service = ServiceThread(build_api, api_settings(redis_srv.url))
    yield service
    stop_service(service)


@pytest.fixture()
def stub(api: ServiceThread, rds: redis.Redis) -> Iterator[pb.task_service_grpc.TaskServiceStub]:
    """A TaskService client over a real channel; Redis flushed before the test (by `rds`)."""
    with grpc.insecure_channel(api.target) as channel:
        yield pb.task_service_grpc.TaskServiceStub(channel)


def now_ms() -> int:
    return int(time.time() * 1000)


def ts_ms(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def ts_dt(dt: datetime) -> Timestamp:
    return ts_ms(round(dt.timestamp() * 1000))


def ms_of(ts: Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def dt_of(ts: Timestamp) -> datetime:
    return datetime.fromtimestamp(ms_of(ts) / 1000, UTC)


def once_task(name: str = "once", in_s: float = 3600.0, **fields: object) -> pb.Task:
    """A one-time task with the log target, running in_s seconds from now."""
    task = pb.Task(name=name, **fields)  # type: ignore[arg-type]
    task.schedule.once.run_time.CopyFrom(ts_ms(now_ms() + int(in_s * 1000)))
    task.target.log.SetInParent()
    return task


def cron_task(
    name: str = "cron", expression: str = "0 * * * *", time_zone: str = "", **fields: object
) -> pb.Task:
    task = pb.Task(name=name, **fields)  # type: ignore[arg-type]
    task.schedule.cron.expression = expression
    task.schedule.cron.time_zone = time_zone
    task.target.log.SetInParent()
    return task


def create(stub: pb.task_service_grpc.TaskServiceStub, task: pb.Task, request_id: str = "") -> pb.Task:
    return stub.CreateTask(pb.CreateTaskRequest(task=task, request_id=request_id), timeout=TIMEOUT).task


def get(stub: pb.task_service_grpc.TaskServiceStub, task_id: str) -> pb.Task:
    return stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=TIMEOUT).task


def rpc_error(call: Callable[[], object], code: grpc.StatusCode) -> grpc.RpcError:
    """Make the call, assert it fails with `code`, return the error."""
    try:
        result = call()
    except grpc.RpcError as err:
        assert err.code() == code, f"expected {code.name}, got {err.code().name}: {err.details()}"
        return err
    raise AssertionError(f"expected {code.name}, the call succeeded: {result}")


def violation_fields(err: grpc.RpcError) -> list[str]:
    """The fields named by the google.rpc.BadRequest detail of an INVALID_ARGUMENT error."""
    status = rpc_status.from_call(err)
    assert status is not None, "no google.rpc.Status in the trailers"
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    fields: list[str] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    assert fields, "INVALID_ARGUMENT without a BadRequest detail naming a field"
    return fields


def invalid(call: Callable[[], object], field: str) -> grpc.RpcError:
    """Assert INVALID_ARGUMENT whose message and BadRequest detail both name `field`."""
    err = rpc_error(call, grpc.StatusCode.INVALID_ARGUMENT)
    assert field in (err.details() or ""), f"message does not name {field!r}: {err.details()!r}"
    fields = violation_fields(err)
    assert field in fields, f"BadRequest names {fields}, not {field!r}"
    return err


def snapshot(rds: redis.Redis) -> dict[bytes, object]:
    """Every key with its type, value and whether it expires, except the page-token secret and
    the recorded partition count (both written by a service's first ready check, not by calls).

    Values are read per type (DUMP is not stable: a hash's serialization follows its internal
    table order, which incremental rehashing changes on mere reads)."""
    written_at_start = {KEYS.page_token_secret.encode(), KEYS.partition_count.encode()}
    out: dict[bytes, object] = {}
    for key in rds.keys("*"):
        if key in written_at_start:
            continue
        kind = rds.type(key)
        if kind == b"string":
            value: object = rds.get(key)
        elif kind == b"hash":
            value = rds.hgetall(key)
        elif kind == b"zset":
            value = rds.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            value = sorted(rds.smembers(key))
        elif kind == b"list":
            value = rds.lrange(key, 0, -1)
        else:
            value = rds.dump(key)
        out[key] = (kind, value, rds.ttl(key) >= 0)
    return out


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromMilliseconds(int(seconds * 1000))
    return d


def list_all_tasks(
    stub: pb.task_service_grpc.TaskServiceStub, page_size: int = 1000, **filters: object
) -> list[pb.Task]:
    out: list[pb.Task] = []
    token = ""
    while True:
        resp = stub.ListTasks(
            pb.ListTasksRequest(page_size=page_size, page_token=token, **filters),  # type: ignore[arg-type]
            timeout=TIMEOUT,
        )
        out += resp.tasks
        token = resp.next_page_token
        if not token:
            return out


def list_all_executions(
    stub: pb.task_service_grpc.TaskServiceStub, page_size: int = 1000, **filters: object
) -> list[pb.Execution]:
    out: list[pb.Execution] = []
    token = ""
    while True:
        resp = stub.ListExecutions(
            pb.ListExecutionsRequest(page_size=page_size, page_token=token, **filters),  # type: ignore[arg-type]
            timeout=TIMEOUT,
        )
        out += resp.executions
        token = resp.next_page_token
        if not token:
            return out


def ids(items: Iterable[pb.Task] | Iterable[pb.Execution]) -> list[str]:
    return [i.id for i in items]
