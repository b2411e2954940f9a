"""The api's egress checks on http targets: HTTP_DENY_PRIVATE and credentials in URLs, against a
real api on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import redis

from schedcore import pb
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.helpers import TIMEOUT, invalid, once_task, snapshot, stop_service
from tests.support import RedisServer, ServiceThread

URL = "task.target.http.url"


@pytest.fixture(scope="module")
def private_api(redis_srv: RedisServer) -> Iterator[ServiceThread]:
    service = ServiceThread(build_api, api_settings(redis_srv.url, http_deny_private=True))
    yield service
    stop_service(service)


@pytest.fixture()
def private_stub(
    private_api: ServiceThread, rds: redis.Redis
) -> Iterator[pb.task_service_grpc.TaskServiceStub]:
    with grpc.insecure_channel(private_api.target) as channel:
        yield pb.task_service_grpc.TaskServiceStub(channel)


def create(stub: pb.task_service_grpc.TaskServiceStub, url: str) -> pb.Task:
    task = once_task("http")
    task.target.http.CopyFrom(pb.HttpTarget(url=url))
    return stub.CreateTask(pb.CreateTaskRequest(task=task), timeout=TIMEOUT).task


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9464/metrics",
        "http://localhost:9464/metrics",
        "http://api.localhost/",
        "http://10.0.0.7/",
        "http://172.20.1.1/",
        "http://192.168.0.1/",
        "http://100.64.1.1/",
        "http://[fd00::1]/",
        "http://0.0.0.0:9464/",
        "http://[::]:9464/",
        "http://[::ffff:0.0.0.0]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://2130706433/",
    ],
)
def test_deny_private_refuses_local_and_private_urls(
    private_stub: pb.task_service_grpc.TaskServiceStub, rds: redis.Redis, url: str
) -> None:
    before = snapshot(rds)
    err = invalid(lambda: create(private_stub, url), URL)
    assert "HTTP_DENY_PRIVATE" in (err.details() or "")
    assert snapshot(rds) == before


def test_deny_private_admits_public_addresses(private_stub: pb.task_service_grpc.TaskServiceStub) -> None:
    assert create(private_stub, "https://93.184.215.14/hook").target.http.url
    assert create(private_stub, "https://example.com/hook").target.http.url


def test_private_addresses_are_allowed_by_default(stub: pb.task_service_grpc.TaskServiceStub) -> None:
    assert create(stub, "http://10.0.0.7/hook").target.http.url


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("https://alice:hunter2@example.com/hook", "user name or password"),
        ("https://alice@example.com/hook", "user name or password"),
        ("https://example.com/hook?api_key=hunter2", "'api_key'"),
        ("https://example.com/hook?page=2&access_token=hunter2", "'access_token'"),
        ("https://example.com/hook?X-Amz-Signature=hunter2", "'X-Amz-Signature'"),
        ("https://example.com/hook?sig=hunter2", "'sig'"),
        ("https://example.com/hook?client_secret=hunter2", "'client_secret'"),
        ("https://example.com/hook?password=hunter2", "'password'"),
        ("https://example.com/hook?%74oken=hunter2", "'token'"),
    ],
)
def test_credentials_in_a_url_are_refused_without_echoing_them(
    stub: pb.task_service_grpc.TaskServiceStub, rds: redis.Redis, url: str, named: str
) -> None:
    before = snapshot(rds)
    err = invalid(lambda: create(stub, url), URL)
    message = err.details() or ""
    assert named in message and "secret_headers" in message, message
    assert "hunter2" not in message and "hunter2" not in str(err.trailing_metadata())
    assert snapshot(rds) == before


def test_an_update_cannot_add_credentials_to_a_url(stub: pb.task_service_grpc.TaskServiceStub) -> None:
    task = create(stub, "https://example.com/hook?page=2")
    task.target.http.url = "https://example.com/hook?token=hunter2"
    invalid(lambda: stub.UpdateTask(pb.UpdateTaskRequest(task=task), timeout=TIMEOUT), URL)


def test_plain_query_parameters_are_fine(stub: pb.task_service_grpc.TaskServiceStub) -> None:
    url = "https://example.com/hook?page=2&design=a&monkeys=3&q=token"
    assert create(stub, url).target.http.url == url
