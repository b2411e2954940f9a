"""SchedulerService: results executors could not deliver on their stream (its scheduler died)."""

from __future__ import annotations

import grpc

from schedcore import ipb
from services.scheduler.results import Recorder


class SchedulerService(ipb.scheduler_grpc.SchedulerServiceServicer):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def ReportResults(
        self, request: ipb.ReportResultsRequest, context: grpc.aio.ServicerContext
    ) -> ipb.ReportResultsResponse:
        recorded = await self.recorder.record(request.results)
        await self.recorder.renew(request.renewals)
        return ipb.ReportResultsResponse(recorded=recorded)
