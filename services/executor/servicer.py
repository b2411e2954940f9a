"""ExecutorService: the stream a scheduler pushes work on. Requests are read in a task of their
own; the call's response side sends what the stream's outbox batches.

The contract as a scheduler sees it:
- No credit comes before the scheduler reports demand > 0; demand is absolute and read after
  the items of the same message have used their credits, then `release` is applied.
- Items beyond the credits held are not run: each comes back at once as a WorkResult with status
  PENDING and a status_message starting "no credit"; while the executor shuts down, items come
  back the same way with "executor shutting down". Attempts cut short by shutdown come back
  PENDING too, with their real start_time. PENDING never counts as an attempt.
- Half-closing the call (no more requests) returns the stream's unused credits; the executor
  still sends the results of its running attempts, then ends the call with OK.
- Cancelling the call, or losing it, makes it gone: results of its attempts (and renewals of those
  still running) go to SchedulerService.ReportResults at SCHEDULER_ADDR instead.
- Every result sent is kept until the scheduler acknowledges it (`acks`, once recorded). When the
  call ends for any reason (cancelled, broken, half-closed, executor shutting down), the results
  not acknowledged on it are sent again through ReportResults: a scheduler that half-closes, or
  never acks, gets its results twice (fencing drops the second copy). When the executor ends the
  call (shutting down), it first waits up to ACK_WAIT_S for the acks of what it sent.
- A message carrying acks and nothing else (no items, no release, demand 0) leaves the demand
  last reported as it is: acks alone never zero it. The same holds for cancels.
- `cancels` stop attempts the executor holds under that (execution id, lease token), whichever
  stream brought them: one not started yet never starts; a running one is stopped (http call
  aborted; command process group SIGTERMed, SIGKILLed if it outlives 1 s). Each is reported
  once, on its own stream: CANCELLED, "cancelled: <reason>", not retryable, start_time when it
  started (for one never started, the time of the cancel). A cancel the executor holds no such
  attempt for is ignored; an attempt that ended as the cancel came reports its own result
  instead. An attempt being stopped is not renewed.
- The first message of an executor that runs kinds beyond log and http (EXECUTOR_COMMAND_TARGETS)
  names them in `capabilities`; the scheduler sends such items only on streams that named them.
- One ExecuteResponse may carry grants, results and renewals; a renewal never accompanies the
  result of the same attempt in one message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from schedcore.ipb import ExecuteRequest, ExecuteResponse, executor_grpc
from services.executor.core import Engine, Stream

log = logging.getLogger("executor.stream")

# When the executor ends a call (shutting down), how long it waits for the acks of the results it
# sent before ending it; those still unacknowledged then go through ReportResults.
ACK_WAIT_S = 0.5


class ExecutorServicer(executor_grpc.ExecutorServiceServicer):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, engine: Engine, capabilities: list[str] | None = None) -> None:
        self.engine = engine
        # Target kinds beyond log and http this executor runs, announced first on every stream.
        self.capabilities = capabilities or []

    async def Execute(
        self, request_iterator: AsyncIterator[ExecuteRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ExecuteResponse]:
        stream = self.engine.open_stream(context.peer())
        log.info("scheduler stream opened", extra={"peer": stream.name})
        reader = asyncio.create_task(self._read(request_iterator, stream), name="stream reader")
        try:
            if self.capabilities:  # before any grant: the scheduler routes by it
                yield ExecuteResponse(executor_id=self.engine.executor_id, capabilities=self.capabilities)
            while (message := await stream.outbox.next()) is not None:
                yield message
            if not stream.half_closed and not reader.done():  # the executor ends it: acks still come
                await stream.outbox.wait_acked(ACK_WAIT_S)
        finally:
            reader.cancel()
            self.engine.close_stream(stream)
            log.info("scheduler stream closed", extra={"scheduler": stream.name})

    async def _read(self, requests: AsyncIterator[ExecuteRequest], stream: Stream) -> None:
        try:
            async for request in requests:
                self.engine.on_request(stream, request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken call ends this stream only
            log.warning("scheduler stream broken: %s", exc, extra={"scheduler": stream.name})
            self.engine.close_stream(stream)
        else:
            self.engine.half_close(stream)
