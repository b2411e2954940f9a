"""Assembles the executor: targets, runner, credits and streams, the ReportResults fallback, and
the shared gRPC bootstrap. The executor holds no database credentials and never imports redis."""

from __future__ import annotations

import logging

import grpc

from schedcore import metrics
from schedcore.channels import ChannelSecurity
from schedcore.identity import AllowedClients
from schedcore.ipb import executor_grpc, executor_pb2
from schedcore.server import GrpcService
from schedcore.settings import ANY_CLIENT, Settings, SettingsError
from services.executor.core import Engine
from services.executor.reporter import Reporter
from services.executor.runner import Runner
from services.executor.servicer import ExecutorServicer
from services.executor.targets import OPTIONAL, enabled

log = logging.getLogger("executor")

SERVICE_NAME = executor_pb2.DESCRIPTOR.services_by_name["ExecutorService"].full_name
# A result for a gone stream is retried this long beyond one lease, then dropped.
REPORT_MARGIN_S = 30.0
# How long, at exit, the reporter may take to deliver what it still holds.
REPORT_FLUSH_S = 5.0


def allowed_clients(settings: Settings) -> list[AllowedClients]:
    """The check that only schedulers open Execute streams (EXECUTOR_ALLOWED_CLIENTS). It needs
    mTLS: in plaintext (development) no caller has an identity, and is not checked."""
    if settings.grpc_plaintext or settings.executor_allowed_clients == (ANY_CLIENT,):
        return []
    return [AllowedClients(settings.executor_allowed_clients, [SERVICE_NAME], "EXECUTOR_ALLOWED_CLIENTS")]


async def build(settings: Settings) -> GrpcService:
    targets = {kind: cls(settings) for kind, cls in enabled(settings).items()}
    capabilities = sorted(kind for kind in targets if kind in OPTIONAL)
    runner = Runner(settings.instance_id, settings.output_limit_bytes, targets)
    reporter = Reporter(
        settings.scheduler_addr,
        settings.instance_id,
        give_up_s=settings.lease_s + REPORT_MARGIN_S,
        security=ChannelSecurity.from_settings(settings),
    )
    engine = Engine(
        settings.executor_concurrency,
        settings.lease_s,
        settings.instance_id,
        runner,
        reporter,
        prefetch=settings.executor_prefetch,
    )
    servicer = ExecutorServicer(engine, capabilities)
    # The capacity beside tasksched_executor_attempts_in_flight: alerts and dashboards take the ratio.
    metrics.EXECUTOR_CONCURRENCY.set(settings.executor_concurrency)

    def register(server: grpc.aio.Server) -> list[str]:
        executor_grpc.add_ExecutorServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    async def ready() -> bool:
        return True  # no dependency to probe: serving means the process is up

    async def start() -> None:
        engine.start()

    async def close() -> None:
        await engine.close(REPORT_FLUSH_S)
        for target in targets.values():
            await target.aclose()

    # Execute streams live as long as both sides do: no max connection age, which would cut
    # them (and push every running attempt's result through ReportResults) every few minutes.
    gates = allowed_clients(settings)
    service = GrpcService(
        "executor",
        settings,
        register,
        ready,
        close,
        on_start=start,
        drain=engine.drain,
        limit_connection_age=False,
        interceptors=gates,
    )
    # After the certificate files' own checks (GrpcService): TLS without client certificates
    # cannot tell a scheduler from anyone, so the executor does not start unless the list is `*`.
    if gates and not settings.tls_client_ca_file:
        raise SettingsError(
            "EXECUTOR_ALLOWED_CLIENTS: checking who opens Execute streams needs client certificates: "
            f"set TLS_CLIENT_CA_FILE (mTLS), or EXECUTOR_ALLOWED_CLIENTS={ANY_CLIENT} to accept any client"
        )
    return service
