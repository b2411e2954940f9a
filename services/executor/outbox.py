"""What one stream has to say to its scheduler, batched: grants, results and renewals go out
together, at most one message per linger period (a few ms), or at once when enough results
wait. Never one message per item under load.

A result sent is not forgotten: it stays in `unacked` until the scheduler acknowledges it
(ExecuteRequest.acks, once recorded in Redis). If the stream ends first, `take_results` hands the
unacknowledged results over with the unsent ones, and they go to SchedulerService.ReportResults:
a result in HTTP/2 buffers, or queued in a scheduler that dies, is not lost. Memory stays bounded:
beyond `max_unacked` entries, or once an entry is older than `max_unacked_age_s`, the oldest are
dropped with a log line (the scheduler's lease expiry is then the backstop: it runs the
execution again)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from schedcore.ipb import ExecuteResponse, LeaseRenewal, ResultAck, WorkResult
from schedcore.loops import wait_event

log = logging.getLogger("executor.outbox")

# How long the first pending entry waits for company before the message goes out.
LINGER_S = 0.005
# A message goes out without lingering once this many results wait; also the most it carries.
MAX_RESULTS = 500
# Rough bound of one message (the server's limit is 8 MiB).
MAX_BYTES = 4 * 1024 * 1024
# Defaults of the bounds on results sent and not acknowledged yet (the engine sets its own).
MAX_UNACKED = 1000
MAX_UNACKED_AGE_S = 40.0

Key = tuple[str, int]


def _size(result: WorkResult) -> int:
    return len(result.result.output) * 4 + len(result.status_message) * 4 + 256


class Outbox:
    def __init__(
        self,
        executor_id: str,
        linger_s: float = LINGER_S,
        max_unacked: int = MAX_UNACKED,
        max_unacked_age_s: float = MAX_UNACKED_AGE_S,
    ) -> None:
        self.executor_id = executor_id
        self.linger_s = linger_s
        self.max_unacked = max_unacked
        self.max_unacked_age_s = max_unacked_age_s
        # The scheduler at the other end, for logs.
        self.scheduler = ""
        self.grant = 0
        self.results: list[WorkResult] = []
        self.renewals: list[LeaseRenewal] = []
        # Results sent and not acknowledged yet, oldest first, with the monotonic time they went.
        self.unacked: dict[Key, tuple[float, WorkResult]] = {}
        self.closed = False
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._acked = asyncio.Event()
        self._acked.set()

    @property
    def pending(self) -> bool:
        return bool(self.grant or self.results or self.renewals)

    def add_grant(self, count: int) -> None:
        self.grant += count
        self._wake.set()

    def add_result(self, result: WorkResult) -> None:
        self.results.append(result)
        self._wake.set()
        if len(self.results) >= MAX_RESULTS:
            self._full.set()

    def add_renewal(self, renewal: LeaseRenewal) -> None:
        self.renewals.append(renewal)
        self._wake.set()

    def close(self) -> None:
        """Send what is pending, then end."""
        self.closed = True
        self._wake.set()
        self._full.set()

    def take_results(self) -> list[WorkResult]:
        """The stream is gone: the results sent and not acknowledged, then those not sent yet
        (they go another way)."""
        results = [result for _, result in self.unacked.values()] + self.results
        self.unacked = {}
        self.results = []
        self._acked.set()
        return results

    def ack(self, acks: Iterable[ResultAck]) -> int:
        """The scheduler recorded these results (or found them stale): forget them. Returns how
        many were still held (an ack for an unknown or already dropped result is ignored)."""
        forgotten = 0
        for ack in acks:
            if self.unacked.pop((ack.execution_id, ack.lease_token), None) is not None:
                forgotten += 1
        if not self.unacked:
            self._acked.set()
        return forgotten

    async def wait_acked(self, within_s: float) -> bool:
        """Wait until every result sent was acknowledged; False when time ran out."""
        return await wait_event(self._acked, within_s)

    def prune(self, now: float | None = None) -> list[WorkResult]:
        """Drop the oldest unacknowledged results beyond the bounds (too many, or too old);
        returns them. The scheduler's lease expiry covers them: the execution runs again."""
        now = time.monotonic() if now is None else now
        dropped: list[WorkResult] = []
        oldest = now
        while self.unacked:
            key, (sent, result) = next(iter(self.unacked.items()))
            if len(self.unacked) <= self.max_unacked and now - sent <= self.max_unacked_age_s:
                break
            del self.unacked[key]
            dropped.append(result)
            oldest = min(oldest, sent)
        if dropped:
            log.warning(
                "results never acknowledged dropped: the scheduler's lease expiry covers them",
                extra={
                    "scheduler": self.scheduler,
                    "count": len(dropped),
                    "oldest_age_s": round(now - oldest, 3),
                    "execution_ids": [r.execution_id for r in dropped[:10]],
                    "still_unacked": len(self.unacked),
                },
            )
            if not self.unacked:
                self._acked.set()
        return dropped

    async def next(self) -> ExecuteResponse | None:
        """The next message to send, or None once closed and empty."""
        while not self.pending:
            if self.closed:
                return None
            self._wake.clear()
            await self._wake.wait()
        if not self.closed and len(self.results) < MAX_RESULTS:
            self._full.clear()
            await wait_event(self._full, self.linger_s)
        return self._build()

    def _build(self) -> ExecuteResponse:
        budget = MAX_BYTES
        count = 0
        for result in self.results[:MAX_RESULTS]:
            budget -= _size(result)
            if budget < 0 and count:
                break
            count += 1
        results = self.results[:count]
        ended = {(r.execution_id, r.lease_token) for r in results}
        message = ExecuteResponse(
            grant=self.grant,
            results=results,
            # A renewal queued just before its attempt ended is moot.
            renewals=[r for r in self.renewals if (r.execution_id, r.lease_token) not in ended],
            executor_id=self.executor_id,
        )
        self.grant = 0
        del self.results[:count]
        self.renewals = []
        if results:
            # Kept until acknowledged; a key sent again moves to the end (the order is by age).
            sent = time.monotonic()
            for result in results:
                key = (result.execution_id, result.lease_token)
                self.unacked.pop(key, None)
                self.unacked[key] = (sent, result)
            self._acked.clear()
            self.prune(sent)
        if self.results:
            self._wake.set()
        return message
