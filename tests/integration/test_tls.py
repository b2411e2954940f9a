"""TLS and mTLS on every gRPC hop (docs/security.md), with real certificates from throwaway CAs:
the api over TLS, scheduler <-> executor with mTLS as real processes, certificates from the
wrong CA refused both ways, certificate rotation without a restart, services that refuse to
start without a certificate, schedctl and the ui's client over TLS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.client import Client
from schedcore import pb
from schedcore.channels import ChannelSecurity, channel
from schedcore.ipb import ReportResultsRequest, WorkResult, scheduler_grpc
from services.api.app import build as build_api
from services.executor.app import build as build_executor
from services.executor.reporter import Reporter
from services.scheduler.app import build as build_scheduler
from tests.conftest import api_settings
from tests.integration.helpers import once_task
from tests.integration.test_executor import executor_settings
from tests.support import RedisServer, ServiceThread, free_port, wait_for
from tests.tls_support import Issued, Pki
from ui.client import Api

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
PLAINTEXT = ChannelSecurity(plaintext=True)


def health(target: str, security: ChannelSecurity, service: str = "") -> int:
    with channel(target, security) as ch:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(ch).Check(request, timeout=3).status


def refused(target: str, security: ChannelSecurity) -> bool:
    """The handshake fails: the call never reaches the server (UNAVAILABLE)."""
    try:
        health(target, security)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.UNAVAILABLE
    return False


def tls_settings(pki: Pki, issued: Issued, *, mtls: bool = False) -> dict[str, object]:
    return dict(
        grpc_plaintext=False,
        tls_cert_file=str(issued.cert),
        tls_key_file=str(issued.key),
        tls_ca_file=str(pki.ca_file),
        tls_client_ca_file=str(pki.ca_file) if mtls else "",
    )


@pytest.fixture()
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path, "ca")


@pytest.fixture()
def other(tmp_path: Path) -> Pki:
    """A CA nobody in the deployment trusts."""
    return Pki(tmp_path, "other")


@contextlib.contextmanager
def tls_api(redis_url: str, pki: Pki, issued: Issued | None = None) -> Iterator[ServiceThread]:
    service = ServiceThread(build_api, api_settings(redis_url, **tls_settings(pki, issued or pki.issue())))
    try:
        yield service
    finally:
        service.stop()


# --- the api over TLS -------------------------------------------------------------------------


def test_api_over_tls_answers_only_clients_that_trust_its_ca(
    redis_srv: RedisServer, rds, pki: Pki, other: Pki
) -> None:
    with tls_api(redis_srv.url, pki) as api:
        assert api.service.certificates is not None
        with channel(api.target, pki.client()) as ch:
            stub = pb.task_service_grpc.TaskServiceStub(ch)
            created = stub.CreateTask(pb.CreateTaskRequest(task=once_task("over tls")), timeout=10).task
            assert stub.GetTask(pb.GetTaskRequest(id=created.id), timeout=10).task.name == "over tls"
        # A list of addresses (as make run gives SCHEDULER_ADDR) is checked against its first host.
        listed = f"ipv4:{api.target},{api.target}"
        with channel(listed, pki.client(), [("grpc.lb_policy_name", "round_robin")]) as ch:
            assert (
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == SERVING
            )
        assert refused(api.target, PLAINTEXT)  # a plaintext client gets nothing
        assert refused(api.target, other.client())  # nor one that trusts another CA


def test_schedctl_and_the_ui_client_over_tls(
    redis_srv: RedisServer, rds, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tls_api(redis_srv.url, pki) as api:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDCTL_", "API_ADDR"))}

        def schedctl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "cli", "--api", api.target, "--rpc-timeout", "5", *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        made = schedctl("--tls-ca", str(pki.ca_file), "create", "--name", "via schedctl", "--at", "+1h")
        assert made.returncode == 0, made.stderr
        listed = schedctl("list", "--tls-ca", str(pki.ca_file))  # the flag after the command too
        assert listed.returncode == 0 and "via schedctl" in listed.stdout, listed.stderr
        env["SCHEDCTL_TLS_CA"] = str(pki.ca_file)
        assert "via schedctl" in schedctl("list").stdout
        # Without the CA (gRPC's default roots) or in plaintext, the api cannot be reached.
        del env["SCHEDCTL_TLS_CA"]
        assert schedctl("list").returncode == 10 + grpc.StatusCode.UNAVAILABLE.value[0]
        assert schedctl("list", "--plaintext").returncode == 10 + grpc.StatusCode.UNAVAILABLE.value[0]
        # Contradicting flags, or a CA file that is not one: a usage error naming the flag.
        clash = schedctl("list", "--plaintext", "--tls-ca", str(pki.ca_file))
        assert clash.returncode == 2 and "--plaintext and --tls-ca" in clash.stderr
        bad = schedctl("list", "--tls-ca", str(ROOT / "pyproject.toml"))
        assert bad.returncode == 2 and "--tls-ca" in bad.stderr and "Traceback" not in bad.stderr

        # The ui's client: the services' own variables.
        monkeypatch.delenv("GRPC_PLAINTEXT")
        monkeypatch.setenv("TLS_CA_FILE", str(pki.ca_file))
        ui = Api(api.target)
        assert [t.name for t in ui.list_tasks().tasks] == ["via schedctl"]
        ui.channel.close()
        monkeypatch.setenv("GRPC_PLAINTEXT", "true")
        monkeypatch.delenv("TLS_CA_FILE")
        plain = Api(api.target, timeout_s=2)
        with pytest.raises(Exception) as info:
            plain.list_tasks()
        assert getattr(info.value, "unreachable", False)
        plain.channel.close()
        # schedctl's library client, as the ui's, never falls back to plaintext by itself.
        client = Client(api.target, timeout_s=2)
        with pytest.raises(grpc.RpcError):
            client.call(client.stub.ListTasks, pb.ListTasksRequest())
        client.close()


# --- rotation ----------------------------------------------------------------------------------


def test_renewed_certificate_files_reach_new_connections_without_a_restart(
    redis_srv: RedisServer, rds, pki: Pki, other: Pki, tmp_path: Path
) -> None:
    # The mounted Secret's files: replaced in place, as the kubelet does when cert-manager renews.
    live = Issued(tmp_path / "tls.crt", tmp_path / "tls.key")

    def install(issued: Issued) -> None:
        for src, dst in ((issued.cert, live.cert), (issued.key, live.key)):
            tmp = dst.with_suffix(".new")
            tmp.write_bytes(src.read_bytes())
            os.replace(tmp, dst)

    install(pki.issue())
    with tls_api(redis_srv.url, pki, live) as api:
        certificates = api.service.certificates
        assert certificates is not None
        assert health(api.target, pki.client()) == SERVING
        assert refused(api.target, other.client())

        install(other.issue())  # a certificate of the new CA
        wait_for(lambda: health(api.target, other.client()) == SERVING, timeout=10)
        assert certificates.reloads == 1

        # Half-written files are not served: the certificate in use stays.
        live.cert.write_text("-----BEGIN CERTIFICATE-----\nnot yet\n")
        assert health(api.target, other.client()) == SERVING
        assert certificates.reloads == 1


# --- mTLS between scheduler and executor --------------------------------------------------------


def test_executor_with_mtls_refuses_a_scheduler_without_a_good_client_certificate(
    pki: Pki, other: Pki
) -> None:
    settings = executor_settings(**tls_settings(pki, pki.issue(), mtls=True))
    executor = ServiceThread(build_executor, settings)
    try:
        assert health(executor.target, pki.client(pki.issue())) == SERVING
        assert refused(executor.target, pki.client())  # no client certificate
        assert refused(executor.target, ChannelSecurity(False, str(pki.ca_file), *_pair(other.issue())))
        assert refused(executor.target, PLAINTEXT)
    finally:
        executor.stop()


def test_scheduler_with_mtls_refuses_an_executor_without_a_good_client_certificate(
    redis_srv: RedisServer, rds, pki: Pki, other: Pki
) -> None:
    settings = api_settings(
        redis_srv.url, executor_addrs=f"127.0.0.1:{free_port()}", **tls_settings(pki, pki.issue(), mtls=True)
    )
    scheduler = ServiceThread(build_scheduler, settings)
    try:
        wait_for(lambda: health(scheduler.target, pki.client(pki.issue())) == SERVING, timeout=10)
        # What an executor with a certificate of the wrong CA would send its results with.
        wrong = ChannelSecurity(False, str(pki.ca_file), *_pair(other.issue()))
        with channel(scheduler.target, wrong) as ch:
            stub = scheduler_grpc.SchedulerServiceStub(ch)
            with pytest.raises(grpc.RpcError) as info:
                stub.ReportResults(ReportResultsRequest(executor_id="intruder"), timeout=3)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused(scheduler.target, pki.client())

        # The executor's own reporter: delivered with the deployment's certificate, never with
        # the wrong one (it keeps retrying until it gives up).
        result = WorkResult(
            execution_id="0" * 16, lease_token=1, status=pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
        )

        async def report(security: ChannelSecurity) -> bool:
            reporter = Reporter(f"ipv4:{scheduler.target}", "executor-test", give_up_s=30, security=security)
            runner = asyncio.create_task(reporter.run())
            reporter.add([result])
            try:
                return await reporter.flush(3)
            finally:
                runner.cancel()
                await reporter.close()

        assert scheduler.run(report(pki.client(pki.issue()))) is True
        assert scheduler.run(report(wrong)) is False
    finally:
        scheduler.stop()


def _pair(issued: Issued) -> tuple[str, str]:
    return str(issued.cert), str(issued.key)


class Proc:
    """A service process with its output in files."""

    def __init__(
        self, tmp: Path, module: str, port: int, env: dict[str, str], host: str = "127.0.0.1"
    ) -> None:
        self.name = f"{module.rsplit('.', 1)[-1]}-{port}"
        self.out, self.err = tmp / f"{self.name}.out", tmp / f"{self.name}.err"
        self.target = f"{host}:{port}"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module], cwd=ROOT, env=env, stdout=out, stderr=err
            )

    def wait_serving(self, security: ChannelSecurity, timeout: float = 30) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"{self.name} exited: {self.err.read_text()[-2000:]}"
            try:
                return health(self.target, security) == SERVING
            except grpc.RpcError:
                return False

        wait_for(up, timeout=timeout, interval=0.1)

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def service_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLS_", "GRPC_", "REDIS_"))}
    env.update(
        LEASE_SECONDS="2",
        POLL_INTERVAL_SECONDS="0.02",
        HEALTH_INTERVAL_SECONDS="0.2",
        SHUTDOWN_GRACE_SECONDS="1",
        GRPC_HOST="127.0.0.1",
    )
    env.update(values)
    return env


def test_a_task_fires_and_succeeds_with_mtls_between_real_processes(
    redis_srv: RedisServer, rds, pki: Pki, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in ("api", "scheduler", "executor")}
    # One certificate per service. The executor's names only "executor" and "localhost": the
    # scheduler dials the address localhost resolves to and checks the certificate against the
    # name it was given. The scheduler's names "scheduler", the identity the executor admits.
    executor_cert = pki.issue("executor", "localhost", common_name="executor")
    common = dict(
        REDIS_URL=redis_srv.url,
        EXECUTOR_ADDRS=f"localhost:{ports['executor']}",
        SCHEDULER_ADDR=f"127.0.0.1:{ports['scheduler']}",
    )
    scheduler_env = pki.server_env(pki.service("scheduler"), mtls=True)
    procs = [
        Proc(tmp_path, "services.api", ports["api"], service_env(
            GRPC_PORT=str(ports["api"]), **common, **pki.server_env(pki.service("api")))),
        Proc(tmp_path, "services.executor", ports["executor"], service_env(
            GRPC_PORT=str(ports["executor"]), **common, **pki.server_env(executor_cert, mtls=True)),
            host="localhost"),
        Proc(tmp_path, "services.scheduler", ports["scheduler"], service_env(
            GRPC_PORT=str(ports["scheduler"]), **common, **scheduler_env)),
    ]  # fmt: skip
    client = pki.client(pki.service("client"))
    try:
        for proc in procs:
            proc.wait_serving(client)
        with channel(procs[0].target, pki.client()) as ch:
            stub = pb.task_service_grpc.TaskServiceStub(ch)
            task = stub.CreateTask(pb.CreateTaskRequest(task=once_task("mtls", in_s=0.5)), timeout=10).task

            def succeeded() -> bool:
                reply = stub.ListExecutions(pb.ListExecutionsRequest(task_id=task.id), timeout=10)
                return any(e.status == SUCCEEDED for e in reply.executions)

            wait_for(succeeded, timeout=30, interval=0.2)
        assert '"tls": "on"' in procs[0].output()
        assert all('"tls": "mtls"' in proc.output() for proc in procs[1:])
    finally:
        for proc in procs:
            proc.stop()


# --- refusing to start --------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["services.api", "services.scheduler", "services.executor"])
def test_a_service_without_certificate_or_grpc_plaintext_exits_2_naming_the_variables(module: str) -> None:
    env = service_env(REDIS_URL="redis://127.0.0.1:1/0", GRPC_PORT=str(free_port()))
    done = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    for name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "GRPC_PLAINTEXT=true"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr


def test_unusable_certificate_files_exit_2_naming_the_variable(pki: Pki, other: Pki, tmp_path: Path) -> None:
    good, stranger = pki.issue(), other.issue()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = {
        "TLS_CERT_FILE": {"TLS_CERT_FILE": str(tmp_path / "missing.crt")},
        "TLS_KEY_FILE": {"TLS_KEY_FILE": str(garbage)},
        "TLS_CERT_FILE / TLS_KEY_FILE": {"TLS_KEY_FILE": str(stranger.key)},  # not the cert's key
        "TLS_CLIENT_CA_FILE": {"TLS_CLIENT_CA_FILE": str(garbage)},
        "TLS_CA_FILE": {"TLS_CA_FILE": str(tmp_path / "missing-ca.crt")},
    }
    for name, override in cases.items():
        env = service_env(GRPC_PORT=str(free_port()), **{**pki.server_env(good), **override})
        done = subprocess.run(
            [sys.executable, "-m", "services.executor"], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, (name, done.stderr)
        assert f"executor: configuration error: {name}: " in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr
