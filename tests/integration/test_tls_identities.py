"""Identities between services (docs/security.md, "Internal traffic: TLS and mTLS"): with mTLS
the executor takes Execute streams only from the identities EXECUTOR_ALLOWED_CLIENTS lists,
read from the verified client certificate (its SAN; its subject CN only when it has no SAN).
Certificates from one throwaway CA, one per service (tests/tls_support.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from schedcore import ipb
from schedcore.channels import ChannelSecurity, channel
from schedcore.identity import AllowedClients
from schedcore.settings import SettingsError
from services.executor.app import build as build_executor
from tests.integration.test_executor import executor_settings
from tests.integration.test_tls import health as check_health
from tests.integration.test_tls import tls_settings
from tests.support import ServiceThread
from tests.tls_support import Pki

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture()
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path, "ca")


def execute(target: str, security: ChannelSecurity) -> ipb.ExecuteResponse | grpc.RpcError:
    """Open an Execute stream as a scheduler does (demand 1): its first response, or the error
    that ended the call. The stream stays open until the answer is read, then is cancelled."""
    done = threading.Event()

    def requests() -> Iterator[ipb.ExecuteRequest]:
        yield ipb.ExecuteRequest(demand=1, scheduler_id="identity-test")
        done.wait(10)

    with channel(target, security) as ch:
        call = ipb.executor_grpc.ExecutorServiceStub(ch).Execute(requests(), timeout=10)
        try:
            return next(iter(call))
        except grpc.RpcError as exc:
            return exc
        finally:
            done.set()
            call.cancel()


def granted(answer: ipb.ExecuteResponse | grpc.RpcError) -> int:
    """The credits the stream's first response granted (the stream was accepted)."""
    assert isinstance(answer, ipb.ExecuteResponse), f"stream refused: {answer}"
    return answer.grant


def denied(answer: ipb.ExecuteResponse | grpc.RpcError) -> str:
    assert isinstance(answer, grpc.RpcError), f"stream accepted: {answer}"
    assert answer.code() == grpc.StatusCode.PERMISSION_DENIED, answer
    return answer.details() or ""


def test_the_executor_takes_execute_streams_only_from_scheduler_identities(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    settings = executor_settings(**tls_settings(pki, pki.service("executor"), mtls=True))
    assert settings.executor_allowed_clients == ("scheduler",)  # the default: the manifests' name
    executor = ServiceThread(build_executor, settings)
    client = pki.client
    try:
        with caplog.at_level(logging.WARNING, logger="schedcore.identity"):
            assert granted(execute(executor.target, client(pki.service("scheduler")))) == 1

            message = denied(execute(executor.target, client(pki.service("api"))))
            assert "api" in message and "EXECUTOR_ALLOWED_CLIENTS" in message
            # A certificate without SAN is known by its subject CN.
            assert "client" in denied(execute(executor.target, client(pki.without_san("client"))))
            assert granted(execute(executor.target, client(pki.without_san("scheduler")))) == 1
            # With a SAN, the CN is not looked at: CN=scheduler cannot vouch for SAN "client".
            sneaky = pki.issue("client", common_name="scheduler")
            assert "client" in denied(execute(executor.target, client(sneaky)))

            # Health stays open to every certificate of the CA (probes, other services).
            assert check_health(executor.target, client(pki.service("api"))) == SERVING
        refusals = [r.getMessage() for r in caplog.records if r.name == "schedcore.identity"]
        assert len(refusals) == 3, refusals
        assert "api" in refusals[0] and "127.0.0.1" in refusals[0]  # the peer, and all it names
        assert "client" in refusals[1]
    finally:
        executor.stop()


def test_the_allow_list_is_a_setting(pki: Pki) -> None:
    settings = executor_settings(
        **tls_settings(pki, pki.service("executor"), mtls=True),
        executor_allowed_clients=("scheduler-blue", "scheduler-green"),
    )
    executor = ServiceThread(build_executor, settings)
    try:
        green = pki.issue("scheduler-green", "localhost")
        assert granted(execute(executor.target, pki.client(green))) == 1
        denied(execute(executor.target, pki.client(pki.service("scheduler"))))
    finally:
        executor.stop()

    anyone = executor_settings(
        **tls_settings(pki, pki.service("executor"), mtls=True), executor_allowed_clients=("*",)
    )
    executor = ServiceThread(build_executor, anyone)
    try:
        assert granted(execute(executor.target, pki.client(pki.without_san("client")))) == 1
    finally:
        executor.stop()


def test_an_allow_list_without_client_certificates_stops_the_executor(pki: Pki) -> None:
    """TLS without TLS_CLIENT_CA_FILE: no client certificate, so no identity to check. The
    executor refuses to start rather than take streams from anyone; `*` says so on purpose."""
    no_mtls = executor_settings(**tls_settings(pki, pki.service("executor")))
    with pytest.raises(SettingsError) as info:
        asyncio.run(build_executor(no_mtls))
    assert str(info.value).startswith("EXECUTOR_ALLOWED_CLIENTS: ")
    assert "TLS_CLIENT_CA_FILE" in str(info.value)

    anyone = executor_settings(**tls_settings(pki, pki.service("executor")), executor_allowed_clients=("*",))
    executor = ServiceThread(build_executor, anyone)
    try:
        assert granted(execute(executor.target, pki.client())) == 1
    finally:
        executor.stop()


def test_unary_methods_of_a_guarded_service_are_refused_too(pki: Pki) -> None:
    """The interceptor guards every method of the services it is given, whatever their kind:
    here the health service, guarded for the test."""
    server_cert = pki.service("executor")

    async def main() -> tuple[int, grpc.StatusCode | None]:
        server = grpc.aio.server(interceptors=[AllowedClients(("scheduler",), (health.SERVICE_NAME,), "X")])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        credentials = grpc.ssl_server_credentials(
            [(server_cert.key.read_bytes(), server_cert.cert.read_bytes())],
            root_certificates=pki.ca_file.read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        try:
            target = f"127.0.0.1:{port}"
            status = await asyncio.to_thread(check_health, target, pki.client(pki.service("scheduler")))
            try:
                await asyncio.to_thread(check_health, target, pki.client(pki.service("api")))
            except grpc.RpcError as exc:
                return status, exc.code()
            return status, None
        finally:
            await server.stop(0)

    assert asyncio.run(main()) == (SERVING, grpc.StatusCode.PERMISSION_DENIED)
