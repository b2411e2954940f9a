"""Assembles the executor: targets, runner, credits and streams, the ReportResults fallback, and
the shared gRPC bootstrap. The executor holds no database credentials and never imports redis."""

from __future__ import annotations

import logging

import grpc

from schedcore.channels import ChannelSecurity
from schedcore.ipb import executor_grpc, executor_pb2
from schedcore.server import GrpcService
from schedcore.settings import Settings
from services.executor.engine import Engine
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
    return GrpcService(
        "executor",
        settings,
        register,
        ready,
        close,
        on_start=start,
        drain=engine.drain,
        limit_connection_age=False,
    )
