"""Runs one attempt: picks the target by kind, enforces the timeout, turns every ending into a
WorkResult carrying times, the executor's id and the lease token.

An attempt's task cancelled ends it one of two ways, told apart by `cancel_reason`: CANCELLED
(final, not retryable) when the scheduler asked for it (a CancelAttempt), else PENDING (handed
back: the executor is shutting down). A timeout is neither: it ends TIMED_OUT. An attempt the
scheduler asked to stop that ends otherwise than SUCCEEDED (its target failed as the cancel tore
its connection down) ends CANCELLED too."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from schedcore import metrics, pb, tracing
from schedcore.errors import MAX_MESSAGE, clip
from schedcore.ipb import WorkItem, WorkResult
from schedcore.timeutil import duration_to_ms
from services.executor.targets import AttemptContext, Outcome, Target

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("executor.runner")

DEFAULT_TIMEOUT_S = 60.0
# A target that enforces the timeout itself gets this long beyond it (to stop what it runs)
# before the runner cancels it.
OWN_TIMEOUT_MARGIN_S = 10.0
PENDING = pb.ExecutionStatus.EXECUTION_STATUS_PENDING
SUCCEEDED = pb.ExecutionStatus.EXECUTION_STATUS_SUCCEEDED
TIMED_OUT = pb.ExecutionStatus.EXECUTION_STATUS_TIMED_OUT
CANCELLED = pb.ExecutionStatus.EXECUTION_STATUS_CANCELLED


def now_ts() -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


def cancelled_outcome(reason: str) -> Outcome:
    """An attempt the scheduler stopped (CancelAttempt): final, never retried."""
    message = f"cancelled: {reason}" if reason else "cancelled"
    return Outcome(CANCELLED, status_message=clip(message, MAX_MESSAGE), retryable=False)


def timeout_s(item: WorkItem) -> float:
    ms = duration_to_ms(item.timeout) if item.HasField("timeout") else 0
    return ms / 1000 if ms > 0 else DEFAULT_TIMEOUT_S


class Runner:
    def __init__(self, executor_id: str, output_limit: int, targets: Mapping[str, Target]) -> None:
        self.executor_id = executor_id
        self.output_limit = output_limit
        self.targets = targets

    def result(self, item: WorkItem, outcome: Outcome, start: Timestamp) -> WorkResult:
        result = pb.ExecutionResult(output=outcome.output, output_truncated=outcome.output_truncated)
        if outcome.http_status is not None:
            result.http.status_code = outcome.http_status
        if outcome.exit_code is not None:
            result.command.exit_code = outcome.exit_code
        return WorkResult(
            execution_id=item.execution_id,
            lease_token=item.lease_token,
            status=outcome.status,
            result=result,
            status_message=outcome.status_message,
            start_time=start,
            finish_time=now_ts(),
            retryable=outcome.retryable,
            executor_id=self.executor_id,
        )

    def hand_back(self, item: WorkItem, why: str, start: Timestamp | None = None) -> WorkResult:
        """The item goes back to the scheduler unrun (or cut short): PENDING, not an attempt."""
        outcome = Outcome(PENDING, status_message=why, retryable=True)
        return self.result(item, outcome, start if start is not None else now_ts())

    def cancelled(self, item: WorkItem, reason: str) -> WorkResult:
        """The item the scheduler cancelled before it started: CANCELLED, never run (its start
        time is the cancel's, as a hand-back's is)."""
        return self.result(item, cancelled_outcome(reason), now_ts())

    def run_inline(self, item: WorkItem) -> WorkResult | None:
        """The attempt of an inline target (Target.inline), run to its end now; None when the
        item's target is not inline (run() it)."""
        kind = item.target.WhichOneof("kind") if item.HasField("target") else None
        target = self.targets.get(kind) if kind else None
        if target is None or not target.inline:
            return None
        start = now_ts()
        with tracing.attempt(item) as span:
            try:
                outcome = target.run_now(item, self._context(start, timeout_s(item)))
            except Exception as exc:  # a target's bug ends its attempt, not the executor
                log.exception("%s target raised", kind, extra={"execution_id": item.execution_id})
                outcome = Outcome.failed(f"{kind} target failed: {type(exc).__name__}: {exc}", retryable=True)
            self._ended(span, outcome)
        self._count(item, outcome)
        return self.result(item, outcome, start)

    @staticmethod
    def _ended(span: Span | None, outcome: Outcome) -> None:
        if span is not None:
            tracing.attempt_ended(span, outcome.status, outcome.status_message)

    def _context(self, start: Timestamp, limit: float) -> AttemptContext:
        return AttemptContext(
            executor_id=self.executor_id,
            start_time=datetime.fromtimestamp(start.ToNanoseconds() / 1e9, tz=UTC),
            output_limit=self.output_limit,
            timeout_s=limit,
        )

    def _count(self, item: WorkItem, outcome: Outcome) -> None:
        kind = item.target.WhichOneof("kind") if item.HasField("target") else None
        status = "handed_back" if outcome.status == PENDING else pb.ExecutionStatus.Name(outcome.status)
        metrics.ATTEMPTS.labels(kind or "unknown", metrics.status_label(status)).inc()

    async def run(self, item: WorkItem, cancel_reason: Callable[[], str | None] | None = None) -> WorkResult:
        """Run the attempt to its end. Cancelled, it ends CANCELLED if `cancel_reason` then gives
        the scheduler's reason, else (shutdown) as a hand-back."""
        start = now_ts()
        metrics.ATTEMPTS_IN_FLIGHT.inc()
        with tracing.attempt(item) as span:
            try:
                outcome = await self._run(item, start)
                reason = cancel_reason() if cancel_reason is not None else None
                if reason is not None and outcome.status != SUCCEEDED:
                    # Stopped, but the target saw its own end first (the cancel tore down its
                    # connection: "server disconnected"): it ended because it was cancelled.
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        task.uncancel()
                    outcome = cancelled_outcome(reason)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                reason = cancel_reason() if cancel_reason is not None else None
                if reason is not None:
                    outcome = cancelled_outcome(reason)
                else:
                    why = "executor shutting down: attempt cancelled before it ended"
                    outcome = Outcome(PENDING, status_message=why, retryable=True)  # as hand_back()
            finally:
                metrics.ATTEMPTS_IN_FLIGHT.dec()
            self._ended(span, outcome)
        self._count(item, outcome)
        return self.result(item, outcome, start)

    async def _run(self, item: WorkItem, start: Timestamp) -> Outcome:
        kind = item.target.WhichOneof("kind") if item.HasField("target") else None
        target = self.targets.get(kind) if kind else None
        if target is None:
            if kind == "command":
                return Outcome.failed(
                    "command targets are not enabled on this executor (EXECUTOR_COMMAND_TARGETS)",
                    retryable=False,
                )
            return Outcome.failed(f"unknown target kind {kind or '(unset)'}", retryable=False)
        limit = timeout_s(item)
        ctx = self._context(start, limit)
        try:
            async with asyncio.timeout(
                limit + OWN_TIMEOUT_MARGIN_S if target.own_timeout else limit
            ) as scope:
                return await target.run(item, ctx)
        except TimeoutError:
            if scope.expired():
                return Outcome(
                    TIMED_OUT, status_message=f"attempt exceeded its timeout of {limit:g} s", retryable=True
                )
            return Outcome.failed(f"{kind} target failed: TimeoutError", retryable=True)
        except Exception as exc:  # a target's bug ends its attempt, not the executor
            log.exception("%s target raised", kind, extra={"execution_id": item.execution_id})
            return Outcome.failed(f"{kind} target failed: {type(exc).__name__}: {exc}", retryable=True)
