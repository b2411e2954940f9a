"""Redis with an ACL user and TLS (docs/security.md, Redis): a real redis-server serving only TLS
with the default user off; the api and the scheduler reach it through
`rediss://user:password@host:port/0?ssl_ca_certs=...`; a wrong password leaves them unready with a
log line that says why; the password appears in no line they print."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from schedcore import pb
from schedcore.channels import ChannelSecurity, channel
from tests.integration.helpers import once_task
from tests.integration.test_tls import Proc, health, service_env
from tests.support import free_port, wait_for
from tests.tls_support import Pki

USER = "suite"
PASSWORD = "pw-Kq7vXz3mTt9"  # distinctive, so that any trace of it in the output is found
WRONG = "pw-Wrong4Nq8sLd"
PLAINTEXT = ChannelSecurity(plaintext=True)
SERVING = 1


class TlsRedis:
    """redis-server listening only on a TLS port; the default user is off, USER may do anything."""

    def __init__(self, pki: Pki) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make deps)"
        self.dir = Path(tempfile.mkdtemp(prefix="test-redis-tls-"))
        self.port = free_port()
        self.ca_file = pki.ca_file
        issued = pki.issue()
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(issued.cert), "--tls-key-file", str(issued.key),
             "--tls-ca-cert-file", str(pki.ca_file), "--tls-auth-clients", "no",
             "--user", "default", "off",
             "--user", USER, "on", f">{PASSWORD}", "~ts:*", "&*", "+@all",  # keys under REDIS_KEY_PREFIX only
             "--dir", str(self.dir), "--save", "", "--appendonly", "no",
             "--logfile", str(self.dir / "redis.log")],
        )  # fmt: skip
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(pki.ca_file),
            username=USER,
            password=PASSWORD,
            socket_connect_timeout=0.5,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError((self.dir / "redis.log").read_text()) from None
                time.sleep(0.05)
        client.close()

    def url(self, password: str = PASSWORD) -> str:
        return f"rediss://{USER}:{password}@127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_file}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture()
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    server = TlsRedis(Pki(tmp_path, "redis-ca"))
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def started(tmp: Path, module: str, redis_url: str) -> Iterator[Proc]:
    port = free_port()
    env = service_env(
        GRPC_PORT=str(port),
        GRPC_PLAINTEXT="true",  # the gRPC side is not what this file tests
        REDIS_URL=redis_url,
        REDIS_TIMEOUT_SECONDS="1",
        EXECUTOR_ADDRS=f"127.0.0.1:{free_port()}",
        LOG_LEVEL="DEBUG",  # every line a service may print, to look for the password in
    )
    proc = Proc(tmp, module, port, env)
    try:
        yield proc
    finally:
        proc.stop()


def test_api_and_scheduler_work_with_an_acl_user_over_tls(tls_redis: TlsRedis, tmp_path: Path) -> None:
    # Without the CA the server's certificate is not trusted; without the password no login.
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(tls_redis.url().split("?")[0], socket_connect_timeout=1).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(tls_redis.url(WRONG), socket_connect_timeout=1).ping()

    url = tls_redis.url()
    with started(tmp_path, "services.api", url) as api, started(tmp_path, "services.scheduler", url) as sched:
        api.wait_serving(PLAINTEXT)
        sched.wait_serving(PLAINTEXT)
        with channel(api.target, PLAINTEXT) as ch:
            stub = pb.task_service_grpc.TaskServiceStub(ch)
            task = stub.CreateTask(pb.CreateTaskRequest(task=once_task("acl")), timeout=10).task
            assert stub.GetTask(pb.GetTaskRequest(id=task.id), timeout=10).task.name == "acl"
        time.sleep(1)  # a few rounds of the scheduler's loops against Redis
    for proc in (api, sched):
        assert PASSWORD not in proc.output(), proc.name


def test_a_wrong_password_leaves_the_service_unready_with_a_clear_log_line(
    tls_redis: TlsRedis, tmp_path: Path
) -> None:
    url = tls_redis.url(WRONG)
    with started(tmp_path, "services.api", url) as api, started(tmp_path, "services.scheduler", url) as sched:

        def said_why(proc: Proc) -> bool:
            assert proc.proc.poll() is None, proc.output()
            return "health NOT_SERVING: AuthenticationError" in proc.output()

        for proc in (api, sched):
            wait_for(lambda p=proc: said_why(p), timeout=20, interval=0.2)  # type: ignore[misc]
            assert health(proc.target, PLAINTEXT) != SERVING
        with channel(api.target, PLAINTEXT) as ch, pytest.raises(grpc.RpcError) as info:
            pb.task_service_grpc.TaskServiceStub(ch).GetTask(pb.GetTaskRequest(id="0" * 16), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        time.sleep(1)
    for proc in (api, sched):
        out = proc.output()
        assert WRONG not in out and PASSWORD not in out, proc.name
        lines = [json.loads(line) for line in proc.out.read_text().splitlines() if line.startswith("{")]
        whys = {line["msg"] for line in lines if "NOT_SERVING:" in str(line.get("msg"))}
        # A probe slower than its bound on a loaded machine logs "TimeoutError" in between.
        assert any("invalid username-password pair" in why for why in whys), whys
