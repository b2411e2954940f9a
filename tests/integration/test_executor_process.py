"""The executor as a process: it never loads redis, serves health, and on SIGTERM hands back what
runs longer than the grace, then exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from tests.integration.test_api_process import REFLECTION_V1, REFLECTION_V1ALPHA, reflection_call
from tests.integration.test_executor import (
    PENDING,
    SUCCEEDED,
    HttpServer,
    SchedulerStream,
    assert_complete,
    http_item,
    log_item,
)
from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "GRPC_", "SHUTDOWN_", "TLS_"))}
    env.update({"GRPC_PLAINTEXT": "true", **overrides})  # local development's explicit opt-out
    return env


def start_executor(
    env: dict[str, str], stdout: Any = subprocess.DEVNULL, stderr: Any = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """`python -m services.executor` with `env`, as the Deployment runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "services.executor"], cwd=ROOT, env=env, stdout=stdout, stderr=stderr
    )


def test_importing_the_executor_does_not_load_redis() -> None:
    code = (
        "import sys\n"
        "import services.executor.app, services.executor.__main__\n"
        "loaded = sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.'))\n"
        "assert not loaded, loaded\n"
        "assert 'services.executor.app' in sys.modules\n"
        "print('clean')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "clean"


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service="scheduler.internal.v1.ExecutorService")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=1).status


def test_sigterm_hands_back_long_attempts_and_exits_0(http_server: HttpServer, tmp_path: Path) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = clean_env(
        GRPC_HOST="127.0.0.1",
        GRPC_PORT=str(port),
        SHUTDOWN_GRACE_SECONDS="0.5",
        HEALTH_INTERVAL_SECONDS="0.1",
        INSTANCE_ID="executor-test",
        EXECUTOR_CONCURRENCY="4",
        REDIS_URL="redis://127.0.0.1:1/0",  # never used: the executor has no Redis
    )
    out, err = tmp_path / "executor.out", tmp_path / "executor.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = start_executor(env, stdout, stderr)
    stream: SchedulerStream | None = None
    try:

        def serving() -> bool:
            assert proc.poll() is None, err.read_text()
            try:
                return health(target) == SERVING
            except grpc.RpcError:
                return False

        wait_for(serving, timeout=20)
        stream = SchedulerStream(target, auto_ack=True)
        stream.send(demand=2)
        stream.wait_granted(2)
        quick, long = log_item(), http_item(http_server.url("/hang"), timeout_s=30)
        stream.send([quick, long])
        assert stream.result(quick.execution_id).status == SUCCEEDED
        wait_for(lambda: len(http_server.received) == 1)

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        back = stream.result(long.execution_id, timeout=10)
        assert proc.wait(15) == 0, err.read_text()
        took = time.monotonic() - started
    finally:
        if stream is not None:
            stream.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert back.status == PENDING
    assert "shutting down" in back.status_message
    assert_complete(back, long)
    assert stream.ended.is_set() and stream.error is None
    assert 0.5 <= took < 8
    logs = out.read_text()
    assert "executor shutting down" in logs and "executor stopped" in logs


def test_reflection_v1_and_v1alpha_describe_the_executor() -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = clean_env(GRPC_HOST="127.0.0.1", GRPC_PORT=str(port), REDIS_URL="redis://127.0.0.1:1/0")
    proc = start_executor(env)
    service = "scheduler.internal.v1.ExecutorService"
    try:
        wait_for(lambda: _health_or_none(target) == SERVING, timeout=20)
        with grpc.insecure_channel(target) as channel:
            for reflection in (REFLECTION_V1, REFLECTION_V1ALPHA):
                listed, described = reflection_call(
                    channel,
                    reflection,
                    [
                        reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol=service),
                    ],
                )
                names = {s.name for s in listed.list_services_response.service}
                assert {service, REFLECTION_V1, REFLECTION_V1ALPHA} <= names, reflection
                assert described.file_descriptor_response.file_descriptor_proto, reflection
    finally:
        proc.terminate()
        proc.wait(15)


def test_health_turns_not_serving_while_draining(http_server: HttpServer, tmp_path: Path) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = clean_env(GRPC_HOST="127.0.0.1", GRPC_PORT=str(port), SHUTDOWN_GRACE_SECONDS="2")
    proc = start_executor(env)
    stream: SchedulerStream | None = None
    try:
        wait_for(lambda: _health_or_none(target) == SERVING, timeout=20)
        stream = SchedulerStream(target, auto_ack=True)
        stream.send(demand=1)
        stream.wait_granted(1)
        stream.send([http_item(http_server.url("/hang"), timeout_s=30)])
        wait_for(lambda: len(http_server.received) == 1)
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: _health_or_none(target) == NOT_SERVING, timeout=1.5)
        assert proc.wait(15) == 0
    finally:
        if stream is not None:
            stream.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _health_or_none(target: str) -> int | None:
    try:
        return health(target)
    except grpc.RpcError:
        return None


def test_logs_do_not_print_credentials_of_a_url(http_server: HttpServer, tmp_path: Path) -> None:
    """httpx logs every request's URL at INFO; a URL stored with a token (before the api refused
    them) must not put it in the executor's logs."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = clean_env(GRPC_HOST="127.0.0.1", GRPC_PORT=str(port), LOG_LEVEL="INFO", INSTANCE_ID="executor-logs")
    out = tmp_path / "executor.out"
    with open(out, "wb") as stdout:
        proc = start_executor(env, stdout, stdout)
    stream: SchedulerStream | None = None
    try:
        wait_for(lambda: _health_or_none(target) == SERVING, timeout=20)
        stream = SchedulerStream(target, auto_ack=True)
        stream.send(demand=2)
        stream.wait_granted(2)
        canary = "canary-b4f1d0"
        ok = http_item(f"http://u:{canary}-pw@127.0.0.1:{http_server.server_address[1]}/ok?token={canary}")
        failing = http_item(f"http://127.0.0.1:{free_port()}/x?api_key={canary}")
        stream.send([ok, failing])
        assert stream.result(ok.execution_id).status == SUCCEEDED
        stream.result(failing.execution_id)
        assert http_server.received[0]["path"] == f"/ok?token={canary}", "the request carried it"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if stream is not None:
            stream.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    logs = out.read_text()
    assert "executor stopped" in logs, "INFO logs were written"
    assert canary not in logs, logs


def test_starts_with_a_malformed_redis_url_it_never_uses(tmp_path: Path) -> None:
    """Each service parses only the settings it uses: the executor has no Redis, so a REDIS_URL
    or REDIS_TIMEOUT_SECONDS the api would refuse does not stop it."""
    port = free_port()
    env = clean_env(GRPC_HOST="127.0.0.1", GRPC_PORT=str(port), REDIS_URL="not a url")
    env["REDIS_TIMEOUT_SECONDS"] = "abc"
    err = tmp_path / "executor.err"
    with open(err, "wb") as stderr:
        proc = start_executor(env, None, stderr)
    try:
        wait_for(
            lambda: proc.poll() is not None or _health_or_none(f"127.0.0.1:{port}") == SERVING, timeout=20
        )
        assert proc.poll() is None, err.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
