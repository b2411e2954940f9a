"""List pages bounded in bytes as well as items (issue 13, item 3): a page of fat tasks stops at
LIST_PAGE_MAX_BYTES with a next_page_token, so nothing is skipped and no response passes the
server's send limit; schedctl and the ui client accept responses up to that limit."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import redis

from schedcore import pb
from schedcore.channels import ChannelSecurity
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import KEYS, TIMEOUT, create, once_task, stop_service
from tests.integration.test_cli import ok
from tests.support import RedisServer, ServiceThread
from ui.client import Api

MiB = 1024 * 1024
DEFAULT_BUDGET = 4 * MiB
TASKS = 50


def fat_task(i: int) -> pb.Task:
    """Near the per-field limits: a payload just under MAX_PAYLOAD_BYTES (256 KiB) and a 100 KB body."""
    task = once_task(f"fat-{i:02d}")
    task.payload.update({"blob": f"{i:02d}" + "p" * 255_000})
    task.target.http.CopyFrom(pb.HttpTarget(url="https://example.com/hook", body=b"b" * 100_000))
    return task


def serve(redis_srv: RedisServer, **overrides: object) -> ServiceThread:
    return ServiceThread(build_api, api_settings(redis_srv.url, **overrides))


@pytest.fixture(scope="module")
def fat(redis_srv: RedisServer) -> Iterator[dict[str, int]]:
    """50 fat tasks (> 8 MiB together) in a fresh Redis: their ids and serialized sizes."""
    client = redis_srv.client()
    client.flushall()
    service = serve(redis_srv)
    try:
        with grpc.insecure_channel(service.target) as channel:
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            tasks = [create(stub, fat_task(i)) for i in range(TASKS)]
    finally:
        stop_service(service)
    sizes = {t.id: t.ByteSize() for t in tasks}
    assert sum(sizes.values()) > 8 * MiB
    yield sizes
    client.flushall()
    client.close()


def pages(stub: pb.task_service_grpc.TaskServiceStub, page_size: int) -> list[pb.ListTasksResponse]:
    out: list[pb.ListTasksResponse] = []
    token = ""
    while True:
        resp = stub.ListTasks(pb.ListTasksRequest(page_size=page_size, page_token=token), timeout=TIMEOUT)
        out.append(resp)
        token = resp.next_page_token
        if not token:
            return out


def test_pages_of_fat_tasks_stop_at_the_byte_budget_and_skip_nothing(
    redis_srv: RedisServer, fat: dict[str, int]
) -> None:
    service = serve(redis_srv)  # the default budget
    try:
        with grpc.insecure_channel(service.target) as channel:  # gRPC's default limits (4 MiB)
            got = pages(pb.task_service_grpc.TaskServiceStub(channel), page_size=TASKS)
    finally:
        stop_service(service)
    ids = [t.id for page in got for t in page.tasks]
    assert sorted(ids) == sorted(fat) and len(ids) == len(set(ids))
    assert len(got) > 1
    assert all(0 < len(page.tasks) < TASKS and page.ByteSize() <= DEFAULT_BUDGET for page in got)
    assert all(page.next_page_token for page in got[:-1])


def test_a_smaller_budget_gives_smaller_pages(redis_srv: RedisServer, fat: dict[str, int]) -> None:
    service = serve(redis_srv, list_page_max_bytes=MiB)
    try:
        with grpc.insecure_channel(service.target) as channel:
            got = pages(pb.task_service_grpc.TaskServiceStub(channel), page_size=1000)
    finally:
        stop_service(service)
    assert sorted(t.id for page in got for t in page.tasks) == sorted(fat)
    assert all(page.ByteSize() <= MiB for page in got)


def test_schedctl_and_the_ui_client_accept_pages_past_grpcs_default_4_mib(
    redis_srv: RedisServer, fat: dict[str, int]
) -> None:
    budget = 6 * MiB  # an operator's raised budget, under the server's 8 MiB send limit
    service = serve(redis_srv, list_page_max_bytes=budget)
    try:
        with grpc.insecure_channel(service.target) as channel:
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:  # what a default client makes of it
                stub.ListTasks(pb.ListTasksRequest(page_size=TASKS), timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        listed = ok(service.target, "list", "--all")
        assert sum(1 for line in listed.splitlines() if " fat-" in line) == TASKS
        api = Api(service.target, security=ChannelSecurity(plaintext=True))  # the ui's client
        try:
            first = api.list_tasks(page_size=TASKS)
        finally:
            api.channel.close()
        assert 4 * MiB < first.ByteSize() <= budget and first.next_page_token
    finally:
        stop_service(service)


def test_the_budget_does_not_touch_small_pages(redis_srv: RedisServer, rds: redis.Redis) -> None:
    service = serve(redis_srv, list_page_max_bytes=64 * 1024)
    try:
        with grpc.insecure_channel(service.target) as channel:
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            for i in range(20):
                create(stub, once_task(f"small-{i}"))
            got = pages(stub, page_size=50)
    finally:
        stop_service(service)
    assert len(got) == 1 and len(got[0].tasks) == 20


def test_execution_and_audit_pages_stop_at_the_budget_too(redis_srv: RedisServer, rds: redis.Redis) -> None:
    service = serve(redis_srv, list_page_max_bytes=1024 * 1024)
    try:
        with grpc.insecure_channel(service.target) as channel:
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            # An execution carries its task's payload: a dozen of a fat task's are 3 MB.
            task = create(stub, fat_task(0))
            runs = {
                stub.RunTask(pb.RunTaskRequest(id=task.id), timeout=TIMEOUT).execution.id for _ in range(12)
            }
            seen: list[str] = []
            token, responses = "", 0
            while True:
                resp = stub.ListExecutions(
                    pb.ListExecutionsRequest(task_id=task.id, page_size=50, page_token=token), timeout=TIMEOUT
                )
                assert resp.ByteSize() <= 1024 * 1024
                seen += [e.id for e in resp.executions]
                responses += 1
                token = resp.next_page_token
                if not token:
                    break
            assert sorted(seen) == sorted(runs) and responses > 1
    finally:
        stop_service(service)
    # Audit events are small: 1,000 of them pass the smallest budget.
    service = serve(redis_srv, list_page_max_bytes=64 * 1024)
    try:
        with grpc.insecure_channel(service.target) as channel:
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            batch = [pb.CreateTaskRequest(task=once_task(f"t{i}")) for i in range(1000)]
            stub.BatchCreateTasks(pb.BatchCreateTasksRequest(requests=batch), timeout=60)
            audit = pb.audit_service_grpc.AuditServiceStub(channel)
            events: list[str] = []
            token, responses = "", 0
            while True:
                page = audit.ListAuditEvents(
                    pb.ListAuditEventsRequest(page_size=1000, page_token=token), timeout=TIMEOUT
                )
                assert page.ByteSize() <= 64 * 1024
                events += [e.id for e in page.events]
                responses += 1
                token = page.next_page_token
                if not token:
                    break
    finally:
        stop_service(service)
    assert len(events) == len(set(events)) == len(rds.xrange(KEYS.audit)) >= 1000
    assert responses > 1
