"""Signed http calls (docs/security.md, "Signed http calls"): the executor signs each request of a
task with signing secrets by the Standard Webhooks scheme, and a target verifies it.

The target here verifies with its own implementation (`verify`, hmac and base64 from the spec),
not the suite's signer: what it accepts is what any Standard Webhooks library accepts. The
secrets are write-only through the api, sealed in Redis and absent from every log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from google.protobuf.field_mask_pb2 import FieldMask

from schedcore import pb
from schedcore.sealing import Sealer, is_sealed, new_key
from schedcore.store.keys import Keys
from services.api.app import build as build_api
from tests.conftest import api_settings
from tests.integration.engine_support import TERMINAL, once_in
from tests.integration.test_api_process import api_process
from tests.integration.test_executor import FAILED, SUCCEEDED, executor, http_item, scheduler_stream
from tests.integration.test_executor_http import run_items
from tests.integration.test_secret_headers import redis_values, service
from tests.support import RedisServer, ServiceThread, free_port, wait_for

KEYS = Keys()
KEY = new_key()
PATH = "task.target.http.signing_secrets"


def whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


SECRET_A, SECRET_B, SECRET_C = whsec(), whsec(), whsec()
BAD = "whsec_" + base64.b64encode(b"too short, refused").decode()  # 18 bytes
EVERY = (SECRET_A, SECRET_B, SECRET_C, BAD)


def forms(secret: str) -> list[bytes]:
    """The secret as sent, and its base64 part alone (what a careless log might print)."""
    return [secret.encode(), secret.removeprefix("whsec_").encode()]


# --- the target's own verifier (Standard Webhooks, symmetric v1) ---------------------------------


def signed_content(headers: dict[str, str], body: bytes) -> bytes:
    return f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """Whether one of the request's signatures is `secret`'s (header names in lowercase)."""
    if not {"webhook-id", "webhook-timestamp", "webhook-signature"} <= set(headers):
        return False
    if abs(time.time() - int(headers["webhook-timestamp"])) > tolerance:
        return False
    key = base64.b64decode(secret[len("whsec_") :])
    mac = hmac.new(key, signed_content(headers, body), hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split(" "))


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names in lowercase
    names: list[str]  # every header name as sent, repeats included
    body: bytes
    accepted: bool


class Receiver(ThreadingHTTPServer):
    """A target holding `secrets` (two while it rotates): 200 when a signature verifies with one
    of them, 401 otherwise. Every request is recorded."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Verifying)
        self.secrets: list[str] = [SECRET_A]
        self.received: list[Received] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def by_path(self) -> dict[str, Received]:
        return {r.path: r for r in self.received}


class _Verifying(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        accepted = any(verify(s, headers, body) for s in self.server.secrets)
        names = [k.lower() for k in self.headers]
        self.server.received.append(Received(self.command, self.path, headers, names, body, accepted))
        payload = b"verified" if accepted else b"bad signature"
        self.send_response(200 if accepted else 401)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --- the executor signs ---------------------------------------------------------------------------


def test_a_signed_request_verifies_and_a_tampered_one_or_another_secret_does_not(receiver: Receiver) -> None:
    seal = Sealer([KEY]).seal
    body = b'{"event": "nightly", "n": 1}'
    forged = {"webhook-signature": "v1,forged", "Webhook-Id": "forged-id", "X-Plain": "p"}
    one = http_item(receiver.url("/one"), body=body, headers=forged, signing_secrets=[seal(SECRET_A)])
    # Rotation: two secrets, two signatures. A GET without a body signs the empty body.
    two = http_item(
        receiver.url("/two"),
        method=pb.HttpMethod.HTTP_METHOD_GET,
        signing_secrets=[seal(SECRET_B), seal(SECRET_A)],
    )
    other = http_item(receiver.url("/other"), body=body, signing_secrets=[seal(SECRET_C)])
    unsigned = http_item(receiver.url("/unsigned"), body=body)
    before = int(time.time())
    results = run_items([one, two, other, unsigned], secret_keys=(KEY,))
    after = int(time.time())
    got = receiver.by_path()

    signed = got["/one"]
    assert results[one.execution_id].status == SUCCEEDED and signed.accepted
    assert results[one.execution_id].result.output == "verified"
    headers = signed.headers
    assert headers["webhook-id"] == one.execution_id == headers["idempotency-key"]
    assert before <= int(headers["webhook-timestamp"]) <= after
    assert headers["webhook-signature"].count("v1,") == 1 and "forged" not in str(headers)
    assert all(signed.names.count(n) == 1 for n in ("webhook-id", "webhook-signature"))
    assert signed.body == body and headers["x-plain"] == "p"
    assert verify(SECRET_A, headers, body)
    # What the target's verifier refuses: a changed body, id or timestamp, another secret.
    assert not verify(SECRET_A, headers, body + b" ")
    assert not verify(SECRET_A, headers, body.replace(b"1", b"2"))
    assert not verify(SECRET_A, {**headers, "webhook-id": two.execution_id}, body)
    assert not verify(
        SECRET_A, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}, body
    )
    assert not verify(SECRET_B, headers, body)

    rotating = got["/two"]
    assert results[two.execution_id].status == SUCCEEDED and rotating.accepted
    assert rotating.method == "GET" and rotating.body == b""
    first, second = rotating.headers["webhook-signature"].split(" ")
    assert verify(SECRET_B, {**rotating.headers, "webhook-signature": first}, b"")
    assert verify(SECRET_A, {**rotating.headers, "webhook-signature": second}, b"")
    assert not verify(SECRET_A, {**rotating.headers, "webhook-signature": first}, b"")

    # Signed with a secret this target does not hold: it refuses (401), the attempt fails.
    assert not got["/other"].accepted and verify(SECRET_C, got["/other"].headers, body)
    assert results[other.execution_id].status == FAILED
    assert results[other.execution_id].result.http.status_code == 401
    # No secrets, no signature.
    assert not any(n.startswith("webhook-") for n in got["/unsigned"].names)
    for result in results.values():
        assert not any(form.decode() in str(result) for s in EVERY for form in forms(s))


def test_a_signing_secret_the_executor_cannot_open_fails_the_attempt_naming_it(receiver: Receiver) -> None:
    work = http_item(receiver.url("/hook"), signing_secrets=[Sealer([KEY]).seal(SECRET_A)])
    with executor() as ex, scheduler_stream(ex, auto_ack=True) as s:  # no SECRET_KEYS here
        s.send(demand=1)
        s.wait_granted(1)
        s.send([work])
        result = s.result(work.execution_id)
    assert result.status == FAILED and not result.retryable
    assert "signing secret '0' cannot be used" in result.status_message
    assert "SECRET_KEYS" in result.status_message
    assert receiver.received == [], "nothing is sent unsigned"


# --- the api: write-only, sealed, kept on update, validated ---------------------------------------


@pytest.fixture()
def sealing(redis_srv: RedisServer, rds: redis.Redis) -> Iterator[pb.task_service_grpc.TaskServiceStub]:
    service = ServiceThread(build_api, api_settings(redis_srv.url, secret_keys=(KEY,)))
    try:
        with grpc.insecure_channel(service.target) as channel:
            yield pb.task_service_grpc.TaskServiceStub(channel)
    finally:
        service.stop()


def signed_task(url: str = "https://example.com/hook", *signing: str) -> pb.Task:
    return pb.Task(
        name="signed",
        schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 0 * * *")),
        target=pb.Target(http=pb.HttpTarget(url=url, body=b"{}", signing_secrets=list(signing))),
    )


def stored_secrets(rds: redis.Redis, task_id: str) -> list[str]:
    """The task's signing secrets as Redis holds them, opened (asserting each is sealed)."""
    raw = rds.hget(KEYS.task(task_id), "spec")
    assert raw is not None and not any(form in raw for s in EVERY for form in forms(s))
    held = list(pb.Task.FromString(raw).target.http.signing_secrets)  # type: ignore[arg-type]
    assert all(is_sealed(s) for s in held)
    return [Sealer([KEY]).open(s) for s in held]


def assert_redacted(task: pb.Task, count: int) -> None:
    assert list(task.target.http.signing_secrets) == [""] * count
    assert not any(form.decode() in str(task) for s in EVERY for form in forms(s))


def test_signing_secrets_are_write_only_sealed_and_kept_by_position(
    sealing: pb.task_service_grpc.TaskServiceStub, rds: redis.Redis
) -> None:
    created = sealing.CreateTask(
        pb.CreateTaskRequest(task=signed_task("https://example.com/a", SECRET_A, SECRET_B))
    )
    task_id = created.task.id
    assert_redacted(created.task, 2)
    assert stored_secrets(rds, task_id) == [SECRET_A, SECRET_B]
    assert_redacted(sealing.GetTask(pb.GetTaskRequest(id=task_id)).task, 2)
    batch = sealing.BatchCreateTasks(
        pb.BatchCreateTasksRequest(
            requests=[pb.CreateTaskRequest(task=signed_task("https://x.example", SECRET_C))]
        )
    )
    assert_redacted(batch.tasks[0], 1)
    listed = {t.id: t for t in sealing.ListTasks(pb.ListTasksRequest()).tasks}
    assert_redacted(listed[task_id], 2)
    assert_redacted(listed[batch.tasks[0].id], 1)
    assert_redacted(sealing.PauseTask(pb.PauseTaskRequest(id=task_id)).task, 2)
    assert_redacted(sealing.ResumeTask(pb.ResumeTaskRequest(id=task_id)).task, 2)
    assert not any(form in value for value in redis_values(rds) for s in EVERY for form in forms(s))

    def update(*signing: str) -> pb.Task:
        edited = sealing.GetTask(pb.GetTaskRequest(id=task_id)).task  # what a client does
        edited.target.http.url = f"https://example.com/{len(signing)}"
        del edited.target.http.signing_secrets[:]
        edited.target.http.signing_secrets.extend(signing)
        mask = FieldMask(paths=["target"])
        return sealing.UpdateTask(pb.UpdateTaskRequest(task=edited, update_mask=mask)).task

    assert_redacted(
        sealing.UpdateTask(pb.UpdateTaskRequest(task=pb.Task(id=task_id, name="renamed"))).task, 2
    )
    assert stored_secrets(rds, task_id) == [SECRET_A, SECRET_B]
    assert_redacted(update("", ""), 2)  # sent back as read: kept
    assert stored_secrets(rds, task_id) == [SECRET_A, SECRET_B]
    assert_redacted(update("", SECRET_C), 2)  # a rotation: the second replaced
    assert stored_secrets(rds, task_id) == [SECRET_A, SECRET_C]
    assert_redacted(update(SECRET_C), 1)  # the old one dropped
    assert stored_secrets(rds, task_id) == [SECRET_C]
    assert_redacted(update(), 0)  # no more signing
    assert stored_secrets(rds, task_id) == []


def test_malformed_signing_secrets_are_refused_naming_the_field_with_redis_unchanged(
    sealing: pb.task_service_grpc.TaskServiceStub,
    stub: pb.task_service_grpc.TaskServiceStub,
    rds: redis.Redis,
) -> None:
    task_id = sealing.CreateTask(
        pb.CreateTaskRequest(task=signed_task("https://example.com/a", SECRET_A))
    ).task.id
    before = sorted(redis_values(rds))

    def refused(call: Any, request: Any, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> str:
        with pytest.raises(grpc.RpcError) as info:
            call(request)
        assert info.value.code() == code, info.value.details()
        details = info.value.details()
        assert not any(form.decode() in details for s in EVERY for form in forms(s))
        assert sorted(redis_values(rds)) == before, "nothing written"
        return details

    assert f"{PATH}[1]" in refused(
        sealing.CreateTask, pb.CreateTaskRequest(task=signed_task("https://e.x", SECRET_A, BAD))
    )
    assert f"{PATH}[0]" in refused(
        sealing.CreateTask, pb.CreateTaskRequest(task=signed_task("https://e.x", ""))
    )
    three = signed_task("https://e.x", SECRET_A, SECRET_B, SECRET_C)
    assert "at most 2" in refused(sealing.CreateTask, pb.CreateTaskRequest(task=three))
    marked = signed_task("https://e.x", "sealed:v1:" + SECRET_A)
    assert f"{PATH}[0]" in refused(sealing.CreateTask, pb.CreateTaskRequest(task=marked))
    # An update: a bad one, and an empty one at a position nothing is stored at.
    mask = FieldMask(paths=["target"])
    for signing in (["", BAD], ["", ""]):
        edited = signed_task("https://example.com/a", *signing)
        edited.id = task_id
        details = refused(sealing.UpdateTask, pb.UpdateTaskRequest(task=edited, update_mask=mask))
        assert f"{PATH}[1]" in details
    # An api without SECRET_KEYS cannot keep the sealed secret: it says so and changes nothing.
    edited = signed_task("https://example.com/b", "")
    edited.id = task_id
    details = refused(
        stub.UpdateTask,
        pb.UpdateTaskRequest(task=edited, update_mask=mask),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert f"{PATH}[0]" in details and "SECRET_KEYS" in details
    assert stored_secrets(rds, task_id) == [SECRET_A]


# --- end to end: api, scheduler and executor processes --------------------------------------------


def test_a_task_with_two_secrets_reaches_a_verifying_target_and_no_secret_is_stored_or_logged(
    redis_srv: RedisServer, rds: redis.Redis, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.secrets = [SECRET_B]  # the target already moved to the new secret
    scheduler_port, executor_port = free_port(), free_port()
    engine = {"REDIS_URL": redis_srv.url, "SCHEDULER_ADDR": f"127.0.0.1:{scheduler_port}"}
    keys = {"SECRET_KEYS": KEY}
    addrs = {"EXECUTOR_ADDRS": f"127.0.0.1:{executor_port}"}
    with (
        api_process(tmp_path, redis_srv.url, LOG_LEVEL="DEBUG", **keys) as api,
        service("services.executor", executor_port, tmp_path, **engine, **keys),
        service("services.scheduler", scheduler_port, tmp_path, **addrs, **engine),
        api.channel() as channel,
    ):
        stub = pb.task_service_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError):  # refused: its value must not be logged either
            stub.CreateTask(pb.CreateTaskRequest(task=signed_task(receiver.url("/x"), BAD)))
        task = signed_task(receiver.url("/hook"), SECRET_A, SECRET_B)
        task.schedule.CopyFrom(once_in(0.3))
        task_id = stub.CreateTask(pb.CreateTaskRequest(task=task)).task.id

        def done() -> list[pb.Execution]:
            found = stub.ListExecutions(pb.ListExecutionsRequest(task_id=task_id)).executions
            return [e for e in found if e.status in TERMINAL]

        wait_for(lambda: bool(done()), timeout=20)
        execution = done()[0]
        assert_redacted(stub.GetTask(pb.GetTaskRequest(id=task_id)).task, 2)
        assert_redacted(stub.ListTasks(pb.ListTasksRequest()).tasks[0], 2)
        held = redis_values(rds)
        assert held and not any(form in v for v in held for s in EVERY for form in forms(s))

    assert execution.status == SUCCEEDED, execution.status_message
    (call,) = receiver.received
    assert call.accepted and call.body == b"{}" and call.headers["webhook-id"] == execution.id
    old, new = call.headers["webhook-signature"].split(" ")
    assert verify(SECRET_A, {**call.headers, "webhook-signature": old}, b"{}")
    assert verify(SECRET_B, {**call.headers, "webhook-signature": new}, b"{}")
    logs = {p.name: p.read_text() for p in tmp_path.iterdir() if p.suffix in (".out", ".err")}
    assert {"executor.out", "scheduler.out"} <= set(logs) and any(logs.values())
    for name, text in logs.items():
        for secret in EVERY:
            assert not any(form.decode() in text for form in forms(secret)), f"a secret in {name}"
