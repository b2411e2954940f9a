"""The api as a real process (`python -m services.api`): settings errors, JSON logs on stdout,
health and reflection, graceful shutdown on SIGTERM, garbage requests, request ids."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

from schedcore import pb
from tests.support import RedisServer, free_port, redis_server, wait_for

ROOT = Path(__file__).resolve().parents[2]
TASK_SERVICE = "scheduler.v1.TaskService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REFUSED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
# Every variable Settings reads: the outer environment must not leak into the process under test.
SETTINGS_VARIABLES = {
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "PARTITIONS",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_CLUSTER_NODES",
    "REDIS_TIMEOUT_SECONDS",
    "GRPC_HOST",
    "GRPC_PORT",
    "SHUTDOWN_GRACE_SECONDS",
    "HEALTH_INTERVAL_SECONDS",
    "LOG_LEVEL",
    "MAX_PAYLOAD_BYTES",
    "HISTORY_MAX_PER_TASK",
    "HISTORY_MAX_AGE_SECONDS",
    "REQUEST_ID_TTL_SECONDS",
    "PAGE_TOKEN_TTL_SECONDS",
    "PAGE_TOKEN_SECRET",
    "LIST_PAGE_MAX_BYTES",
    "GRPC_PLAINTEXT",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "TLS_CA_FILE",
    "TLS_CLIENT_CA_FILE",
    "HEALTH_PORT",
    "AUTH_MODE",
    "AUTH_BOOTSTRAP_TOKEN",
    "AUTH_CACHE_SECONDS",
    "AUDIT_MAX_EVENTS",
    "SECRET_KEYS",
    "NAMESPACE_MAX_TASKS",
    "NAMESPACE_MAX_TASKS_OVERRIDES",
    "NAMESPACE_MAX_TASK_BYTES",
    "NAMESPACE_MAX_TASK_BYTES_OVERRIDES",
    "NAMESPACE_MAX_RUNS_PER_MINUTE",
    "NAMESPACE_MAX_RUNS_PER_MINUTE_OVERRIDES",
    "API_RATE_LIMIT",
    "API_RATE_BURST",
    "API_MAX_CONCURRENT_RPCS",
    "API_PROCESSES",
}


def process_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    # Local development's explicit opt-outs of TLS and of tokens; tests that want them say so.
    env.update({"GRPC_PLAINTEXT": "true", "AUTH_MODE": "none", **overrides})
    return env


class ApiProcess:
    """`python -m services.api` with stdout and stderr in files (a full pipe cannot block it)."""

    def __init__(self, tmp: Path, redis_url: str, grace_s: float = 2.0, **env: str) -> None:
        self.port = free_port()
        self.stdout_path = tmp / f"api-{self.port}.out"
        self.stderr_path = tmp / f"api-{self.port}.err"
        self.env = process_env(
            **{
                "REDIS_URL": redis_url,
                "GRPC_HOST": "127.0.0.1",
                "GRPC_PORT": str(self.port),
                "SHUTDOWN_GRACE_SECONDS": str(grace_s),
                "HEALTH_INTERVAL_SECONDS": "0.1",
                "REDIS_TIMEOUT_SECONDS": "5",
                **env,
            }
        )
        self.grace_s = grace_s
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.api"], cwd=ROOT, env=self.env, stdout=out, stderr=err
            )
        self.target = f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def health(self, service: str = "", timeout: float = 1.0) -> int:
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status

    def wait_serving(self, timeout: float = 20.0) -> None:
        def serving() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"api exited with {self.proc.returncode}: {self.stderr()}")
            try:
                return self.health() == SERVING
            except grpc.RpcError:
                return False

        wait_for(serving, timeout=timeout, interval=0.05)

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stdout().splitlines()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def api_process(tmp: Path, redis_url: str, **kw: object) -> Iterator[ApiProcess]:
    api = ApiProcess(tmp, redis_url, **kw)  # type: ignore[arg-type]
    try:
        api.wait_serving()
        yield api
    finally:
        api.kill()


def create_task(channel: grpc.Channel, name: str = "process test") -> pb.Task:
    stub = pb.task_service_grpc.TaskServiceStub(channel)
    task = pb.Task(
        name=name,
        schedule=pb.Schedule(cron=pb.CronSchedule(expression="0 0 1 1 *")),
        target=pb.Target(log=pb.LogTarget()),
    )
    return stub.CreateTask(pb.CreateTaskRequest(task=task), timeout=10).task


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer) -> Iterator[ApiProcess]:
    """One api process for the tests that only read from it."""
    with api_process(tmp_path_factory.mktemp("api"), redis_srv.url) as api:
        yield api


# --- configuration errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRPC_PORT", "abc"),
        ("GRPC_PORT", "70000"),
        ("REDIS_URL", "http://nope"),
        ("LOG_LEVEL", "LOUD"),
        ("SHUTDOWN_GRACE_SECONDS", "-1"),
        # URLs the Redis client (or urlparse itself) cannot use: caught at start-up too, not later
        # as a traceback with status 1.
        ("REDIS_URL", "redis://localhost:abc/0"),
        ("REDIS_URL", "redis://[::1/0"),
    ],
)
def test_bad_setting_exits_with_status_2_naming_the_variable(name: str, value: str) -> None:
    env = process_env(REDIS_URL="redis://127.0.0.1:1/0", GRPC_HOST="127.0.0.1", GRPC_PORT="0")
    env[name] = value
    done = subprocess.run(
        [sys.executable, "-m", "services.api"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done.stderr
    assert f"api: configuration error: {name}: " in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""  # nothing was started, so nothing was logged


def test_port_already_taken_fails_with_a_message_naming_grpc_port() -> None:
    # GrpcService.start means to raise "cannot listen on <address> (GRPC_HOST / GRPC_PORT)".
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = process_env(REDIS_URL="redis://127.0.0.1:1/0", GRPC_HOST="127.0.0.1", GRPC_PORT=str(port))
        done = subprocess.run(
            [sys.executable, "-m", "services.api"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode != 0
    assert "GRPC_PORT" in done.stderr + done.stdout, done.stderr[-500:]


# --- a running process ----------------------------------------------------------------------------


def test_health_is_serving_for_the_server_and_task_service(shared_api: ApiProcess) -> None:
    assert shared_api.health("") == SERVING
    assert shared_api.health(TASK_SERVICE) == SERVING
    with shared_api.channel() as channel, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=2)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
BUF = ROOT / "node_modules" / ".bin" / "buf"


def reflection_call(
    channel: grpc.Channel, service: str, requests: list[reflection_pb2.ServerReflectionRequest]
) -> list[reflection_pb2.ServerReflectionResponse]:
    """One reflection stream to `service` (v1 or v1alpha). The v1 messages are the v1alpha ones
    on the wire (only the package differs), so the v1alpha classes encode both."""
    info = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(info(iter(requests), timeout=5))


@pytest.mark.parametrize("service", [REFLECTION_V1, REFLECTION_V1ALPHA])
def test_reflection_lists_the_services(shared_api: ApiProcess, service: str) -> None:
    with shared_api.channel() as channel:
        listed, described, itself = reflection_call(
            channel,
            service,
            [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=TASK_SERVICE),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=service),
            ],
        )
    names = {s.name for s in listed.list_services_response.service}
    assert {TASK_SERVICE, "grpc.health.v1.Health", REFLECTION_V1, REFLECTION_V1ALPHA} <= names
    # The descriptors themselves are served, so grpcurl-like tools can call the api.
    assert described.file_descriptor_response.file_descriptor_proto
    assert b"CreateTask" in b"".join(described.file_descriptor_response.file_descriptor_proto)
    # Both reflection services describe themselves, each under its own package.
    (proto,) = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in itself.file_descriptor_response.file_descriptor_proto
    ]
    assert f"{proto.package}.{proto.service[0].name}" == service
    (method,) = proto.service[0].method
    assert method.name == "ServerReflectionInfo" and method.client_streaming and method.server_streaming
    assert method.input_type == f".{proto.package}.ServerReflectionRequest"


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
def test_a_reflection_client_lists_describes_and_calls(
    shared_api: ApiProcess, protocol: str, tmp_path: Path
) -> None:
    # buf curl (node_modules, `make tools`): a reflection client of its own, in Go, like grpcurl.
    assert BUF.exists(), "run `make tools` (npm ci) first"

    def buf_curl(*args: str) -> str:
        done = subprocess.run(
            [
                str(BUF),
                "curl",
                "--protocol",
                "grpc",
                "--http2-prior-knowledge",
                "--reflect-protocol",
                protocol,
                *args,
            ],
            env={**os.environ, "BUF_CACHE_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    base = f"http://{shared_api.target}"
    services = buf_curl("--list-services", base).split()
    assert {TASK_SERVICE, "grpc.health.v1.Health", REFLECTION_V1, REFLECTION_V1ALPHA} <= set(services)
    # Listing methods takes every service's file descriptors.
    methods = buf_curl("--list-methods", base).split()
    assert f"{TASK_SERVICE}/CreateTask" in methods
    assert f"{REFLECTION_V1}/ServerReflectionInfo" in methods
    # A call whose request and response the client encodes from the reflected schema alone.
    reply = json.loads(buf_curl("-d", '{"service": ""}', f"{base}/grpc.health.v1.Health/Check"))
    assert reply == {"status": "SERVING"}


def test_logs_are_json_lines_on_stdout(shared_api: ApiProcess) -> None:
    with shared_api.channel() as channel:
        stub = pb.task_service_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.GetTask(
                pb.GetTaskRequest(id="not-an-id"), metadata=[("x-request-id", "log-check-1")], timeout=5
            )

    def logged() -> bool:
        return any(e.get("request_id") == "log-check-1" for e in shared_api.log_lines())

    wait_for(logged, timeout=5)
    entries = shared_api.log_lines()
    assert entries, "no log lines"
    for entry in entries:
        assert {"ts", "level", "service", "logger", "msg"} <= set(entry), entry
        assert entry["service"] == "api"
    listening = [e for e in entries if e["msg"] == "api listening"]
    assert listening and listening[0]["port"] == shared_api.port
    assert any(e["msg"] == "health SERVING" for e in entries)
    # The interceptor's line for the rejected call carries the caller's request id.
    (rejected,) = [e for e in entries if e.get("request_id") == "log-check-1"]
    assert "INVALID_ARGUMENT" in str(rejected["msg"]) and "GetTask" in str(rejected["msg"])


@pytest.mark.parametrize("method", ["GetTask", "CreateTask", "ListTasks"])
def test_garbage_request_body_is_invalid_argument_and_service_stays_healthy(
    shared_api: ApiProcess, method: str
) -> None:
    with shared_api.channel() as channel:
        call = channel.unary_unary(
            f"/{TASK_SERVICE}/{method}", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff\xff", timeout=5)
        error = info.value
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
        status = rpc_status.from_call(error)
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        assert [v.field for v in bad_request.field_violations] == ["request"]
        # The service is still fine: a well-formed call on the same channel works.
        task = create_task(channel, f"after garbage {method}")
        got = pb.task_service_grpc.TaskServiceStub(channel).GetTask(pb.GetTaskRequest(id=task.id), timeout=5)
        assert got.task.id == task.id
    assert shared_api.health() == SERVING
    assert shared_api.proc.poll() is None


def test_unknown_method_is_unimplemented(shared_api: ApiProcess) -> None:
    with shared_api.channel() as channel:
        call = channel.unary_unary(f"/{TASK_SERVICE}/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=5)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_request_id_is_echoed_in_initial_metadata(shared_api: ApiProcess) -> None:
    with shared_api.channel() as channel:
        stub = pb.task_service_grpc.TaskServiceStub(channel)
        task = create_task(channel)
        _, call = stub.GetTask.with_call(
            pb.GetTaskRequest(id=task.id), metadata=[("x-request-id", "abc-123.X:y_z")], timeout=5
        )
        assert dict(call.initial_metadata())["x-request-id"] == "abc-123.X:y_z"
        # Errors carry it too.
        with pytest.raises(grpc.RpcError) as info:
            stub.GetTask(pb.GetTaskRequest(id="f" * 16), metadata=[("x-request-id", "missing-1")], timeout=5)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        assert dict(info.value.initial_metadata())["x-request-id"] == "missing-1"
        # Without one, or with one that is not a safe token, the server makes one up.
        ids = set()
        for metadata in ([], [("x-request-id", "has space")], [("x-request-id", "x" * 65)]):
            _, call = stub.GetTask.with_call(pb.GetTaskRequest(id=task.id), metadata=metadata, timeout=5)
            generated = dict(call.initial_metadata())["x-request-id"]
            assert generated not in ("has space", "x" * 65)
            assert len(generated) == 16 and int(generated, 16) >= 0
            ids.add(generated)
        assert len(ids) == 3


# --- SIGTERM --------------------------------------------------------------------------------------


def test_sigterm_turns_not_serving_refuses_new_calls_and_exits_0(
    tmp_path: Path, redis_srv: RedisServer
) -> None:
    with api_process(tmp_path, redis_srv.url, grace_s=3.0) as api:
        assert api.health() == SERVING
        sent = time.monotonic()
        api.proc.send_signal(signal.SIGTERM)
        # From now on no new call succeeds: health says NOT_SERVING, or the call is refused.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and api.proc.poll() is None:
            try:
                status = api.health(timeout=0.5)
            except grpc.RpcError as exc:
                # Refused: the listener is closed (UNAVAILABLE) or the server cancels calls that
                # arrive while it stops (CANCELLED).
                assert exc.code() in REFUSED, exc
            else:
                if time.monotonic() - sent > 0.5:
                    assert status == NOT_SERVING
            time.sleep(0.02)
        assert api.proc.wait(api.grace_s + 3) == 0, api.stderr()
        # Nothing was in flight: it does not wait out the grace period.
        assert time.monotonic() - sent < api.grace_s
        messages = [e["msg"] for e in api.log_lines()]
        assert "api shutting down" in messages and messages[-1] == "api stopped"


def test_sigterm_health_watchers_see_not_serving_at_once(tmp_path: Path, redis_srv: RedisServer) -> None:
    with api_process(tmp_path, redis_srv.url, grace_s=1.0) as api, api.channel() as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=TASK_SERVICE), timeout=20
        )
        seen: list[tuple[float, int]] = []
        sent: list[float] = []

        def read() -> None:
            with contextlib.suppress(grpc.RpcError):  # the stream is cut when the grace period ends
                for message in stream:
                    seen.append((time.monotonic(), message.status))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_for(lambda: bool(seen))
        assert [s for _, s in seen] == [SERVING]
        api.proc.send_signal(signal.SIGTERM)
        sent.append(time.monotonic())
        wait_for(lambda: len(seen) > 1, timeout=5)
        at, status = seen[1]
        assert status == NOT_SERVING
        assert at - sent[0] < 0.5
        # The open Watch is a call in flight: the process waits for it no longer than the grace.
        assert api.proc.wait(api.grace_s + 3) == 0, api.stderr()
        assert time.monotonic() - sent[0] < api.grace_s + 2
        reader.join(5)
        assert [s for _, s in seen] == [SERVING, NOT_SERVING]


@contextlib.contextmanager
def stopped(redis: RedisServer) -> Iterator[None]:
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        redis.proc.send_signal(signal.SIGCONT)


def start_get_task(api: ApiProcess, task_id: str) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        with api.channel() as channel:
            stub = pb.task_service_grpc.TaskServiceStub(channel)
            try:
                result["response"] = stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=20)
            except grpc.RpcError as exc:
                result["error"] = exc.code()
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_call_in_flight_at_sigterm_completes(tmp_path: Path) -> None:
    with redis_server() as redis, api_process(tmp_path, redis.url, grace_s=3.0) as api:
        with api.channel() as channel:
            task = create_task(channel)
        with stopped(redis):
            thread, result = start_get_task(api, task.id)
            time.sleep(0.3)  # the GetTask reached the api and waits for Redis
            assert thread.is_alive()
            api.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            time.sleep(0.3)
            # Draining: a new call is not served.
            with api.channel() as channel, pytest.raises(grpc.RpcError) as info:
                pb.task_service_grpc.TaskServiceStub(channel).GetTask(
                    pb.GetTaskRequest(id=task.id), timeout=1
                )
            assert info.value.code() in REFUSED
            assert api.proc.poll() is None  # still waiting for the call in flight
        thread.join(10)
        assert "error" not in result, result
        assert result["response"].task.id == task.id  # type: ignore[attr-defined]
        assert result["elapsed"] >= 0.6  # type: ignore[operator]  # it really waited for Redis
        assert api.proc.wait(api.grace_s + 3) == 0, api.stderr()
        assert time.monotonic() - sent < api.grace_s + 2


def test_call_outliving_the_grace_period_is_cut_and_the_process_exits(tmp_path: Path) -> None:
    with (
        redis_server() as redis,
        api_process(tmp_path, redis.url, grace_s=1.0, REDIS_TIMEOUT_SECONDS="30") as api,
    ):
        with api.channel() as channel:
            task = create_task(channel)
        with stopped(redis):
            thread, result = start_get_task(api, task.id)
            time.sleep(0.3)
            api.proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            assert api.proc.wait(api.grace_s + 4) == 0, api.stderr()
            exited_after = time.monotonic() - sent
            thread.join(10)
        assert exited_after >= api.grace_s - 0.2  # it did give the call its grace period
        assert "response" not in result
        assert result["error"] in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
