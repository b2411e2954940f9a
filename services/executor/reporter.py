"""Delivery of what a gone stream can no longer carry: SchedulerService.ReportResults on any
scheduler replica (settings.scheduler_addr). Results are batched and retried with capped
exponential backoff until `give_up_s` after they were queued, then dropped with a log line: by
then the lease has expired and the scheduler runs the execution again anyway. Renewals are sent
once (the next round brings fresh ones)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import grpc

from schedcore.channels import ChannelSecurity, aio_channel
from schedcore.ipb import LeaseRenewal, ReportResultsRequest, WorkResult, scheduler_grpc
from schedcore.loops import wait_event

log = logging.getLogger("executor.reporter")

BATCH = 500
CALL_TIMEOUT_S = 5.0
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0


class Reporter:
    def __init__(self, addr: str, executor_id: str, give_up_s: float, security: ChannelSecurity) -> None:
        self.addr = addr
        self.security = security
        self.executor_id = executor_id
        self.give_up_s = give_up_s
        self._queue: deque[tuple[float, WorkResult]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._channel: grpc.aio.Channel | None = None
        self._stub: scheduler_grpc.SchedulerServiceStub | None = None

    def _scheduler(self) -> scheduler_grpc.SchedulerServiceStub:
        if self._stub is None:
            self._channel = aio_channel(
                self.addr, self.security, options=[("grpc.lb_policy_name", "round_robin")]
            )
            self._stub = scheduler_grpc.SchedulerServiceStub(self._channel)
        return self._stub

    def add(self, results: list[WorkResult]) -> None:
        if not results:
            return
        deadline = time.monotonic() + self.give_up_s
        self._queue.extend((deadline, r) for r in results)
        self._idle.clear()
        self._wake.set()

    async def renew(self, renewals: list[LeaseRenewal]) -> None:
        """Extend the leases of attempts whose stream is gone; one try."""
        try:
            await self._scheduler().ReportResults(
                ReportResultsRequest(renewals=renewals, executor_id=self.executor_id),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("renewals not delivered: %s", exc.code().name, extra={"count": len(renewals)})

    def _expire(self) -> None:
        now = time.monotonic()
        dropped = 0
        while self._queue and self._queue[0][0] <= now:
            _, result = self._queue.popleft()
            dropped += 1
            log.error(
                "result dropped: no scheduler took it in time",
                extra={"execution_id": result.execution_id, "lease_token": result.lease_token},
            )
        if dropped and not self._queue:
            self._idle.set()

    async def run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while True:
            self._expire()
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [r for _, r in list(self._queue)[:BATCH]]
            try:
                reply = await self._scheduler().ReportResults(
                    ReportResultsRequest(results=batch, executor_id=self.executor_id),
                    timeout=CALL_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "ReportResults failed, retrying in %.2f s: %s",
                    backoff,
                    exc.code().name,
                    extra={"count": len(batch)},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_FIRST_S
            for _ in batch:
                self._queue.popleft()
            log.info("results reported", extra={"count": len(batch), "recorded": reply.recorded})

    async def flush(self, within_s: float) -> bool:
        """Wait until every queued result was delivered or dropped; False when time ran out."""
        return await wait_event(self._idle, within_s)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
